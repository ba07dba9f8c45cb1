//! Following a run's output as it grows: [`Client::follow_logs`] polls `GetRunLogs` and hands
//! out only what is new, until the run ends. The API keeps a size-capped tail, so a poll may
//! find the head dropped; [`fresh_output`] finds where the new text starts. It only reads.

use std::{fmt, time::Duration};

use futures::stream;

use crate::{Client, Error, ResultStream, runs::is_terminal};

/// A piece of a run's output that was not handed out before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// The new output.
    pub text: String,
    /// True when output between the previous chunk and this one was lost: the tail is capped
    /// and more was written between two polls than it keeps.
    pub gap: bool,
}

/// Where the new part of `next` starts, given the tail `prev` seen before, and whether output
/// was lost in between.
///
/// When `next` extends `prev` the answer is `prev.len()`. When the capped tail dropped its head,
/// `next` starts inside `prev`: the longest suffix of `prev` that is a prefix of `next` is what
/// both saw (found in linear time with the KMP failure function). When nothing overlaps, all of
/// `next` is new and some output was lost. Output that repeats itself exactly can make the
/// overlap look longer than it was; that is the limit of comparing tails.
pub fn fresh_output(prev: &str, next: &str) -> (usize, bool) {
    if next.starts_with(prev) {
        return (prev.len(), false);
    }
    let overlap = longest_suffix_prefix(prev.as_bytes(), next.as_bytes());
    // A match of UTF-8 text that starts at next's start ends on one of its char boundaries;
    // fall back to "all new" if that ever did not hold.
    if overlap > 0 && next.is_char_boundary(overlap) {
        (overlap, false)
    } else {
        (0, true)
    }
}

/// The length of the longest suffix of `a` that is also a prefix of `b`.
fn longest_suffix_prefix(a: &[u8], b: &[u8]) -> usize {
    if a.is_empty() || b.is_empty() {
        return 0;
    }
    // Failure function of b: fail[i] = length of the longest proper border of b[..=i].
    let mut fail = vec![0usize; b.len()];
    let mut k = 0;
    for i in 1..b.len() {
        while k > 0 && b[i] != b[k] {
            k = fail[k - 1];
        }
        if b[i] == b[k] {
            k += 1;
        }
        fail[i] = k;
    }
    // Run b as the pattern over the tail of a; the match length at a's end is the answer.
    let start = a.len().saturating_sub(b.len());
    let mut matched = 0;
    for &c in &a[start..] {
        while matched > 0 && (matched == b.len() || c != b[matched]) {
            matched = fail[matched - 1];
        }
        if c == b[matched] {
            matched += 1;
        }
    }
    matched
}

/// What the follow loop carries between polls.
struct Follow {
    client: Client,
    run_id: String,
    every: Duration,
    seen: String,
    first: bool,
    done: bool,
}

impl Follow {
    async fn next(&mut self) -> Option<Result<LogChunk, Error>> {
        loop {
            if self.done {
                return None;
            }
            if !self.first {
                tokio::time::sleep(self.every).await;
            }
            self.first = false;
            // The state first: when it is final, the logs read after it are final too (the
            // tail is written in the same update as the end state).
            let ended = match self.client.get_run(&self.run_id).await {
                Ok(run) => is_terminal(&run.state),
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            let logs = match self.client.run_logs(&self.run_id).await {
                Ok(logs) => logs,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            self.done = ended;
            let (start, gap) = fresh_output(&self.seen, &logs.content);
            let text = logs.content.get(start..).unwrap_or_default().to_owned();
            self.seen = logs.content;
            if !text.is_empty() {
                return Some(Ok(LogChunk { text, gap }));
            }
        }
    }
}

impl Client {
    /// The run's output as it grows: polls every `every`, hands out only the new part, and
    /// ends once the run has ended and its last output was handed out. A poll that finds the
    /// capped tail moved past what was seen marks its chunk with `gap`.
    pub fn follow_logs(
        &self,
        run_id: impl fmt::Display,
        every: Duration,
    ) -> ResultStream<LogChunk> {
        let follow = Follow {
            client: self.clone(),
            run_id: run_id.to_string(),
            every,
            seen: String::new(),
            first: true,
            done: false,
        };
        Box::pin(stream::unfold(follow, |mut follow| async move {
            let item = follow.next().await?;
            Some((item, follow))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh<'a>(prev: &str, next: &'a str) -> (&'a str, bool) {
        let (start, gap) = fresh_output(prev, next);
        (&next[start..], gap)
    }

    #[test]
    fn growing_output_yields_only_the_appended_part() {
        assert_eq!(fresh("", "a\n"), ("a\n", false));
        assert_eq!(fresh("a\n", "a\nb\n"), ("b\n", false));
        assert_eq!(fresh("a\nb\n", "a\nb\n"), ("", false));
    }

    #[test]
    fn a_tail_whose_head_was_dropped_continues_after_the_overlap() {
        assert_eq!(
            fresh("line1\nline2\nline3\n", "line3\nline4\n"),
            ("line4\n", false)
        );
        assert_eq!(fresh("abcdef", "defghi"), ("ghi", false));
        // The cap dropped the head and nothing was added.
        assert_eq!(fresh("abcdef", "cdef"), ("", false));
    }

    #[test]
    fn a_tail_that_moved_past_everything_seen_is_all_new_with_a_gap() {
        assert_eq!(
            fresh("old output\n", "entirely new\n"),
            ("entirely new\n", true)
        );
    }

    #[test]
    fn multibyte_text_is_split_on_char_boundaries() {
        assert_eq!(fresh("héllo wörld", "wörld ünd mehr"), (" ünd mehr", false));
        assert_eq!(fresh("ü", "üü"), ("ü", false));
    }

    #[test]
    fn the_overlap_is_the_longest_suffix_prefix() {
        assert_eq!(longest_suffix_prefix(b"aaaa", b"aab"), 2);
        assert_eq!(longest_suffix_prefix(b"abab", b"abac"), 2);
        assert_eq!(longest_suffix_prefix(b"xaba", b"abac"), 3);
        assert_eq!(longest_suffix_prefix(b"xyz", b"abc"), 0);
        assert_eq!(longest_suffix_prefix(b"ab", b"ab"), 2);
        assert_eq!(longest_suffix_prefix(b"", b"ab"), 0);
    }
}
