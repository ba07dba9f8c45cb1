//! Pagination: [`Page`] is one answer of a list call, and [`paginate`] turns a page fetcher
//! into a stream of every item; it must never fetch a page before the stream asks for items.

use std::{future::Future, pin::Pin};

use futures::{Stream, StreamExt, stream};

use crate::Error;

/// A boxed stream of items or errors, as the listing, watching and following methods return.
/// The stream ends after its first error.
pub type ResultStream<T> = Pin<Box<dyn Stream<Item = Result<T, Error>> + Send>>;

/// One page of a list call.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// The token of the next page; `None` on the last page.
    pub next_page_token: Option<String>,
}

impl<T> Page<T> {
    /// A page from the wire form (an empty token means the last page).
    pub fn new(items: Vec<T>, next_page_token: String) -> Self {
        Self {
            items,
            next_page_token: (!next_page_token.is_empty()).then_some(next_page_token),
        }
    }

    /// True when no page follows this one.
    pub fn is_last(&self) -> bool {
        self.next_page_token.is_none()
    }
}

/// Every item of every page: `fetch(token)` is called with an empty token first, then with
/// each `next_page_token`, until a page has none or a fetch fails (the error is the stream's
/// last item).
pub(crate) fn paginate<T, F, Fut>(fetch: F) -> ResultStream<T>
where
    T: Send + 'static,
    F: FnMut(String) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Page<T>, Error>> + Send + 'static,
{
    let pages = stream::unfold(
        (Some(String::new()), fetch),
        |(token, mut fetch)| async move {
            let token = token?;
            match fetch(token).await {
                Ok(page) => Some((Ok(page.items), (page.next_page_token, fetch))),
                Err(e) => Some((Err(e), (None, fetch))),
            }
        },
    );
    Box::pin(pages.flat_map(|page| match page {
        Ok(items) => stream::iter(items.into_iter().map(Ok)).left_stream(),
        Err(e) => stream::once(async move { Err(e) }).right_stream(),
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use futures::TryStreamExt;

    use super::*;

    #[tokio::test]
    async fn every_page_is_fetched_in_order_with_the_previous_token() {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        let items: Vec<u32> = paginate(move |token: String| {
            log.lock().unwrap().push(token.clone());
            async move {
                Ok(match token.as_str() {
                    "" => Page::new(vec![1, 2], "p2".into()),
                    "p2" => Page::new(vec![3], "p3".into()),
                    _ => Page::new(vec![], String::new()),
                })
            }
        })
        .try_collect()
        .await
        .unwrap();
        assert_eq!(items, [1, 2, 3]);
        assert_eq!(*asked.lock().unwrap(), ["", "p2", "p3"]);
    }

    #[tokio::test]
    async fn a_failed_page_ends_the_stream_with_its_error() {
        let all: Vec<Result<u32, Error>> = paginate(|token: String| async move {
            if token.is_empty() {
                Ok(Page::new(vec![1], "p2".into()))
            } else {
                Err(Error::Protocol("boom".into()))
            }
        })
        .collect()
        .await;
        assert_eq!(all.len(), 2);
        assert!(matches!(all[0], Ok(1)));
        assert!(matches!(all[1], Err(Error::Protocol(_))));
    }
}
