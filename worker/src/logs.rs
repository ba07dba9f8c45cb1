//! A size-capped tail of a run's output: keeps the last bytes, drops the oldest, says whether
//! anything was dropped and counts every byte written. It never grows past its cap, whatever
//! the run prints, and it is only ever read as data: nothing here interprets the output.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
};

/// The most output kept per run.
pub const LOG_TAIL_BYTES: usize = 64 * 1024;

#[derive(Debug)]
pub struct LogTail {
    cap: usize,
    buf: VecDeque<u8>,
    truncated: bool,
    total: u64,
}

impl Default for LogTail {
    fn default() -> Self {
        Self::with_cap(LOG_TAIL_BYTES)
    }
}

impl LogTail {
    pub fn with_cap(cap: usize) -> Self {
        Self {
            cap,
            buf: VecDeque::with_capacity(cap.min(4096)),
            truncated: false,
            total: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.total = self.total.saturating_add(bytes.len() as u64);
        let bytes = if bytes.len() > self.cap {
            self.truncated = true;
            &bytes[bytes.len() - self.cap..]
        } else {
            bytes
        };
        let overflow = (self.buf.len() + bytes.len()).saturating_sub(self.cap);
        if overflow > 0 {
            self.truncated = true;
            self.buf.drain(..overflow);
        }
        self.buf.extend(bytes);
    }

    /// The kept output as text (invalid UTF-8 replaced) and whether older output was dropped.
    pub fn snapshot(&self) -> (String, bool) {
        let (a, b) = self.buf.as_slices();
        let mut bytes = Vec::with_capacity(a.len() + b.len());
        bytes.extend_from_slice(a);
        bytes.extend_from_slice(b);
        (String::from_utf8_lossy(&bytes).into_owned(), self.truncated)
    }

    /// Bytes written so far, kept or not.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }
}

/// The tail of one run's output, shared between the runtime that writes it and the streams
/// that send it live. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct LiveLog {
    inner: Arc<Mutex<LogTail>>,
}

impl LiveLog {
    fn lock(&self) -> MutexGuard<'_, LogTail> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, bytes: &[u8]) {
        self.lock().push(bytes);
    }

    /// A line of the worker's own (`[kairos] …`), e.g. why it killed the run; it starts on a
    /// line of its own.
    pub fn note(&self, text: &str) {
        let mut tail = self.lock();
        let newline = if tail.buf.back().is_some_and(|&b| b != b'\n') {
            "\n"
        } else {
            ""
        };
        tail.push(format!("{newline}[kairos] {text}\n").as_bytes());
    }

    /// The tail as text and whether older output was dropped.
    pub fn snapshot(&self) -> (String, bool) {
        self.lock().snapshot()
    }

    pub fn total_bytes(&self) -> u64 {
        self.lock().total_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_under_the_cap() {
        let mut tail = LogTail::with_cap(10);
        tail.push(b"hello ");
        tail.push(b"you");
        assert_eq!(tail.snapshot(), ("hello you".to_owned(), false));
        assert_eq!(tail.total_bytes(), 9);
    }

    #[test]
    fn keeps_the_end_and_says_it_dropped_the_start() {
        let mut tail = LogTail::with_cap(5);
        tail.push(b"abc");
        tail.push(b"defg");
        assert_eq!(tail.snapshot(), ("cdefg".to_owned(), true));
        tail.push(b"0123456789");
        assert_eq!(tail.snapshot(), ("56789".to_owned(), true));
        assert_eq!(tail.total_bytes(), 17);
    }

    #[test]
    fn a_live_log_is_shared_by_its_clones() {
        let log = LiveLog::default();
        let writer = log.clone();
        writer.push(b"out\n");
        writer.note("killed");
        assert_eq!(log.snapshot().0, "out\n[kairos] killed\n");
        assert_eq!(log.total_bytes(), 20);
        writer.push(b"partial");
        writer.note("again");
        assert!(log.snapshot().0.ends_with("partial\n[kairos] again\n"));
    }
}
