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
            emit(&decode_line(&self.pending[start..end]));
            start = end + 1;
        }
        self.pending.drain(..start);
    }

    /// Emits the unterminated tail, if any; called at end of stream.
    pub(crate) fn finish(&mut self, mut emit: impl FnMut(&str)) {
        if !self.pending.is_empty() {
            emit(&decode_line(&self.pending));
            self.pending.clear();
        }
    }
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
}
