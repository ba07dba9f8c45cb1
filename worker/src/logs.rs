//! A size-capped tail of a run's output: keeps the last bytes, drops the oldest, and says
//! whether anything was dropped. It never grows past its cap, whatever the run prints.

use std::collections::VecDeque;

/// The most output kept per run.
pub const LOG_TAIL_BYTES: usize = 64 * 1024;

#[derive(Debug)]
pub struct LogTail {
    cap: usize,
    buf: VecDeque<u8>,
    truncated: bool,
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
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
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
    }

    #[test]
    fn keeps_the_end_and_says_it_dropped_the_start() {
        let mut tail = LogTail::with_cap(5);
        tail.push(b"abc");
        tail.push(b"defg");
        assert_eq!(tail.snapshot(), ("cdefg".to_owned(), true));
        tail.push(b"0123456789");
        assert_eq!(tail.snapshot(), ("56789".to_owned(), true));
    }
}
