//! Bounded in-memory buffer of a child process's output lines; never grows past its caps.

use std::collections::VecDeque;

/// Most lines kept; older ones are dropped first.
pub(crate) const MAX_LINES: usize = 20_000;
/// Most bytes kept in one line; the rest of a longer line is cut off.
pub(crate) const MAX_LINE_BYTES: usize = 8 * 1024;

/// The last [`MAX_LINES`] lines a process printed, oldest first.
#[derive(Debug, Default)]
pub(crate) struct LineBuffer {
    lines: VecDeque<String>,
    dropped: u64,
}

impl LineBuffer {
    /// Appends one line, dropping the oldest when full and truncating overlong lines.
    pub(crate) fn push(&mut self, mut line: String) {
        if line.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push_str(" …[truncated]");
        }
        if self.lines.len() == MAX_LINES {
            self.lines.pop_front();
            self.dropped += 1;
        }
        self.lines.push_back(line);
    }

    /// True when any kept line contains `needle`.
    pub(crate) fn contains(&self, needle: &str) -> bool {
        self.lines.iter().any(|line| line.contains(needle))
    }

    /// All kept lines joined with `\n` (each line ends with one), prefixed by a
    /// note when older lines were dropped.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        if self.dropped > 0 {
            out.push_str(&format!("…[{} earlier lines dropped]\n", self.dropped));
        }
        for line in &self.lines {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_newest_lines() {
        let mut buffer = LineBuffer::default();
        for i in 0..MAX_LINES + 3 {
            buffer.push(format!("line {i}"));
        }
        let text = buffer.render();
        assert!(text.starts_with("…[3 earlier lines dropped]\nline 3\n"));
        assert!(text.ends_with(&format!("line {}\n", MAX_LINES + 2)));
        assert!(!buffer.contains("line 2\n"));
    }

    #[test]
    fn truncates_overlong_lines_on_a_char_boundary() {
        let mut buffer = LineBuffer::default();
        buffer.push("é".repeat(MAX_LINE_BYTES));
        let text = buffer.render();
        assert!(text.len() < MAX_LINE_BYTES + 32);
        assert!(text.trim_end().ends_with("[truncated]"));
    }
}
