/// The longest line delivered, in bytes; a longer one is delivered in pieces of
/// at most this size, so output without newlines cannot grow a buffer without
/// bound.
pub const MAX_LINE_BYTES: usize = 4096;

/// Splits a byte stream arriving in arbitrary chunks into lines.
///
/// A line may span chunks, and a multi-byte UTF-8 character may be cut between
/// them, so bytes are buffered until a newline arrives and decoded only then.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds a chunk and calls `emit` for every line it completes, without the
    /// line terminator (`\n` or `\r\n`).
    pub(crate) fn push(&mut self, chunk: &[u8], mut emit: impl FnMut(&str)) {
        self.pending.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(offset) = self.pending[start..].iter().position(|b| *b == b'\n') {
            let end = start + offset;
            for piece in pieces(&self.pending[start..end]) {
                emit(&decode_line(piece));
            }
            start = end + 1;
        }
        self.pending.drain(..start);
        while self.pending.len() >= MAX_LINE_BYTES {
            let cut = utf8_cut(&self.pending, MAX_LINE_BYTES);
            emit(&decode_line(&self.pending[..cut]));
            self.pending.drain(..cut);
        }
    }

    /// Emits the unterminated tail, if any; called at end of stream.
    pub(crate) fn finish(&mut self, mut emit: impl FnMut(&str)) {
        if !self.pending.is_empty() {
            emit(&decode_line(&self.pending));
            self.pending.clear();
        }
    }
}

/// `line` in pieces of at most [`MAX_LINE_BYTES`], cut between characters.
fn pieces(mut line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut first = true;
    std::iter::from_fn(move || {
        if line.is_empty() && !std::mem::take(&mut first) {
            return None;
        }
        first = false;
        let cut = utf8_cut(line, MAX_LINE_BYTES);
        let (piece, rest) = line.split_at(cut);
        line = rest;
        Some(piece)
    })
}

/// The largest cut at most `limit` bytes into `bytes` that does not split a
/// UTF-8 character (or `limit` when there is none, in invalid input).
fn utf8_cut(bytes: &[u8], limit: usize) -> usize {
    if bytes.len() <= limit {
        return bytes.len();
    }
    (limit.saturating_sub(3)..=limit).rev().find(|&at| at > 0 && (bytes[at] & 0xC0) != 0x80).unwrap_or(limit)
}

fn decode_line(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, |line| lines.push(line.to_owned()));
        }
        splitter.finish(|line| lines.push(line.to_owned()));
        lines
    }

    #[test]
    fn splits_lines_across_chunks() {
        let cases: Vec<(&[&[u8]], Vec<&str>)> = vec![
            (&[], vec![]),
            (&[b""], vec![]),
            (&[b"one\n"], vec!["one"]),
            (&[b"one\ntwo\n"], vec!["one", "two"]),
            (&[b"on", b"e\ntw", b"o\n"], vec!["one", "two"]),
            (&[b"tail without newline"], vec!["tail without newline"]),
            (&[b"a\n", b"b"], vec!["a", "b"]),
            (&[b"\n\n"], vec!["", ""]),
            (&[b"crlf\r\n", b"x\r", b"\n"], vec!["crlf", "x"]),
            // "é" is 0xC3 0xA9, split between chunks.
            (&[b"caf\xC3", b"\xA9\n"], vec!["café"]),
            (&[b"bad \xFF byte\n"], vec!["bad \u{FFFD} byte"]),
        ];
        for (chunks, expected) in cases {
            assert_eq!(split(chunks), expected, "{chunks:?}");
        }
    }

    #[test]
    fn long_lines_arrive_in_pieces_of_the_limit() {
        let long = "é".repeat(MAX_LINE_BYTES) + "end";
        for chunks in [vec![long.as_bytes()], long.as_bytes().chunks(1000).collect::<Vec<_>>()] {
            let mut input = chunks.clone();
            input.push(b"\nnext\n");
            let lines = split(&input);
            assert!(
                lines.iter().all(|l| l.len() <= MAX_LINE_BYTES),
                "{:?}",
                lines.iter().map(String::len).collect::<Vec<_>>()
            );
            assert_eq!(lines[..lines.len() - 1].concat(), long, "nothing lost, no character cut");
            assert_eq!(lines.last().map(String::as_str), Some("next"));
        }
        let mut splitter = LineSplitter::default();
        let mut count = 0;
        for _ in 0..1000 {
            splitter.push(&[b'x'; 1000], |_| count += 1);
            assert!(splitter.pending.len() < MAX_LINE_BYTES);
        }
        assert_eq!(count, 1000 * 1000 / MAX_LINE_BYTES);
    }
}
