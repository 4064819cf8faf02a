/// The longest line delivered, in bytes; a longer one is delivered in pieces of
/// at most this size, so output without newlines cannot grow a buffer without
/// bound.
pub const MAX_LINE_BYTES: usize = 4096;

/// Splits a byte stream arriving in arbitrary chunks into lines.
///
/// A line may span chunks, and a multi-byte UTF-8 character may be cut between
/// them, so bytes are buffered until a newline arrives and decoded only then.
/// However the stream is cut into chunks, the same lines come out.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds a chunk and calls `emit` for every line it completes, without the
    /// line terminator (`\n` or `\r\n`).
    pub(crate) fn push(&mut self, chunk: &[u8], mut emit: impl FnMut(&str)) {
        // What is pending holds no newline, so only the new bytes are searched:
        // output arriving a few bytes at a time costs no more than in one piece.
        let mut search = self.pending.len();
        self.pending.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(offset) = self.pending[search..].iter().position(|b| *b == b'\n') {
            let end = search + offset;
            emit_line(without_cr(&self.pending[start..end]), &mut emit);
            start = end + 1;
            search = start;
        }
        self.pending.drain(..start);
        // A piece of a long line is cut off only once two more bytes are
        // there: the first tells whether the cut would split a character, and
        // with the second the rest is more than the `\r` of a `\r\n` whose
        // `\n` is still on its way. So pieces fall where they would if the
        // whole line had arrived at once.
        while self.pending.len() > MAX_LINE_BYTES + 1 {
            let cut = utf8_cut(&self.pending, MAX_LINE_BYTES);
            emit_piece(&self.pending[..cut], &mut emit);
            self.pending.drain(..cut);
        }
    }

    /// Emits the unterminated tail, if any; called at end of stream.
    pub(crate) fn finish(&mut self, mut emit: impl FnMut(&str)) {
        if !self.pending.is_empty() {
            emit_line(without_cr(&self.pending), &mut emit);
            self.pending.clear();
        }
    }
}

fn without_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Emits a whole line (an empty one too) in pieces of at most [`MAX_LINE_BYTES`].
fn emit_line(line: &[u8], emit: &mut impl FnMut(&str)) {
    for piece in pieces(line) {
        emit_piece(piece, emit);
    }
}

/// Emits a piece of a line, decoded. Invalid UTF-8 grows in decoding (one
/// byte becomes a three-byte U+FFFD), so the text is cut again if it grew
/// past the limit.
fn emit_piece(piece: &[u8], emit: &mut impl FnMut(&str)) {
    let text = String::from_utf8_lossy(piece);
    let mut rest: &str = &text;
    while rest.len() > MAX_LINE_BYTES {
        let cut = (0..=MAX_LINE_BYTES).rev().find(|at| rest.is_char_boundary(*at)).unwrap_or(0);
        let (head, tail) = rest.split_at(cut);
        emit(head);
        rest = tail;
    }
    emit(rest);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        crate::fuzzing::split_lines(chunks)
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
    fn invalid_utf8_stays_within_the_limit_once_decoded() {
        // Each 0xC3 without its continuation byte decodes to a three-byte U+FFFD.
        let stream = [&b"x".repeat(4736)[..], &[0xC3; 4736], b"tail\r\n", &b"z".repeat(9435), b"\n"].concat();
        for chunks in [vec![&stream[..]], stream.chunks(1000).collect::<Vec<_>>()] {
            let lines = split(&chunks);
            let lengths: Vec<usize> = lines.iter().map(String::len).collect();
            assert!(lengths.iter().all(|n| *n <= MAX_LINE_BYTES), "{lengths:?}");
            assert_eq!(lines.concat().matches('\u{FFFD}').count(), 4736);
            assert_eq!(lines.concat().len(), 4736 + 3 * 4736 + 4 + 9435);
        }
    }

    #[test]
    fn pieces_do_not_depend_on_where_the_chunks_end() {
        let x = |n: usize| "x".repeat(n);
        let cases: Vec<(Vec<u8>, Vec<String>)> = vec![
            // A `\r\n` right after a line of exactly the limit ends that line.
            ([x(MAX_LINE_BYTES).as_bytes(), b"\r\nnext\n"].concat(), vec![x(MAX_LINE_BYTES), "next".into()]),
            // A character across the limit is not split, whichever chunk brings it.
            (
                [x(MAX_LINE_BYTES - 1).as_bytes(), "é".as_bytes(), b"\n"].concat(),
                vec![x(MAX_LINE_BYTES - 1), "é".into()],
            ),
            // A `\r` inside a long line is text, also at the end of a piece.
            (
                [x(MAX_LINE_BYTES - 1).as_bytes(), b"\rmore\n"].concat(),
                vec![x(MAX_LINE_BYTES - 1) + "\r", "more".into()],
            ),
        ];
        for (stream, expected) in cases {
            for cut in [1, MAX_LINE_BYTES - 1, MAX_LINE_BYTES, MAX_LINE_BYTES + 1, stream.len()] {
                let (a, b) = stream.split_at(cut.min(stream.len()));
                assert_eq!(split(&[a, b]), expected, "cut after {cut} bytes");
            }
            let bytes: Vec<&[u8]> = stream.chunks(1).collect();
            assert_eq!(split(&bytes), expected, "a byte at a time");
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
            assert!(splitter.pending.len() <= MAX_LINE_BYTES + 1);
        }
        assert_eq!(count, 1000 * 1000 / MAX_LINE_BYTES);
    }
}
