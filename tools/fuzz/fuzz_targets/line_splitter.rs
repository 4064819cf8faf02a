//! Script output arrives over SSH in chunks of any size. Whatever the bytes
//! and however they are cut, the lines delivered are the same, none is
//! longer than MAX_LINE_BYTES, and valid UTF-8 arrives whole.
//!
//! Input: one byte that seeds the chunk sizes, then the stream, in which
//! `\0 n b` stands for the byte `b` repeated `n * 37` times, so that lines
//! longer than the limit are cheap to find.
#![no_main]

use infrahaus_operator::fuzzing::split_lines;
use infrahaus_operator::ssh::MAX_LINE_BYTES;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((seed, rest)) = data.split_first() else { return };
    let stream = expand(rest);
    let whole = split_lines(&[&stream]);
    for line in &whole {
        assert!(line.len() <= MAX_LINE_BYTES, "a line of {} bytes", line.len());
        assert!(!line.contains('\n'));
    }
    let chunks = chunks(&stream, *seed);
    assert_eq!(split_lines(&chunks), whole, "cut into {:?}", chunks.iter().map(|c| c.len()).collect::<Vec<_>>());
    if let Ok(text) = std::str::from_utf8(&stream) {
        // Nothing lost, nothing replaced: only the line terminators go.
        let expected: String = text.split('\n').map(|line| line.strip_suffix('\r').unwrap_or(line)).collect();
        assert_eq!(whole.concat(), expected);
    }
});

/// Streams stay below this, a few lines of the limit, so that runs stay fast.
const MAX_STREAM: usize = 64 * 1024;

fn expand(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut bytes = input.iter();
    while let Some(&b) = bytes.next() {
        if out.len() >= MAX_STREAM {
            break;
        }
        if b != 0 {
            out.push(b);
            continue;
        }
        let count = usize::from(bytes.next().copied().unwrap_or(0)) * 37;
        let value = bytes.next().copied().unwrap_or(0);
        out.extend(std::iter::repeat_n(value, count));
    }
    out
}

/// The stream cut at sizes drawn from `seed`, from 1 byte to a few kilobytes.
fn chunks(stream: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut state = u32::from(seed) | 1;
    let mut rest = stream;
    let mut out = Vec::new();
    while !rest.is_empty() {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let size = match state >> 28 {
            0..=7 => 1 + (state >> 16) as usize % 8,
            8..=13 => 1 + (state >> 8) as usize % 512,
            _ => 1 + (state >> 8) as usize % 6000,
        };
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        out.push(chunk);
        rest = tail;
    }
    out
}
