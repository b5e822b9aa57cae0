//! Reads an export as chunks of whole lines, so that memory stays bounded by the chunk
//! size (plus one line of at most [`LINE_LENGTH_MAX`] bytes) whatever the file's length.

use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ledger_core::verify::LINE_LENGTH_MAX;

use crate::error::Error;

/// Bytes read from the file at a time.
const READ_BLOCK: usize = 1 << 20;

/// The byte range of each line of a chunk, without its `\n`.
pub type LineRanges = Vec<Range<usize>>;

/// Whole lines, and the 1-based number of the first of them.
#[derive(Debug)]
pub struct Chunk {
    /// The line number of the first line in `data`.
    pub first_line: usize,
    /// Whole lines, each ending in `\n` except perhaps the file's last.
    pub data: Vec<u8>,
}

/// Splits a file into [`Chunk`]s of about `chunk_bytes` each.
#[derive(Debug)]
pub struct ChunkReader<R> {
    inner: R,
    path: PathBuf,
    chunk_bytes: usize,
    pending: Vec<u8>,
    spare: Option<Vec<u8>>,
    next_line: usize,
    eof: bool,
}

impl<R: Read> ChunkReader<R> {
    /// A reader of `inner` (named `path` in errors).
    pub fn new(inner: R, path: &Path, chunk_bytes: usize) -> Self {
        Self {
            inner,
            path: path.to_owned(),
            chunk_bytes: chunk_bytes.max(1),
            pending: Vec::new(),
            spare: None,
            next_line: 1,
            eof: false,
        }
    }

    /// Appends up to [`READ_BLOCK`] bytes to `pending` (into its spare capacity: no
    /// zero-filling, no reallocation once the chunk buffer is sized).
    fn fill(&mut self) -> Result<usize, Error> {
        self.pending.reserve(READ_BLOCK);
        let read = loop {
            match (&mut self.inner)
                .take(READ_BLOCK as u64)
                .read_to_end(&mut self.pending)
            {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(Error::Read {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        };
        if read == 0 {
            self.eof = true;
        }
        Ok(read)
    }

    /// The next chunk, or `None` at the end of the file.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, Error> {
        let Some(data) = self.cut()? else {
            return Ok(None);
        };
        let first_line = self.next_line;
        self.next_line += memchr::memchr_iter(b'\n', &data).count();
        Ok(Some(Chunk { first_line, data }))
    }

    /// [`Self::next_chunk`] with the byte range of each of its lines (without the `\n`),
    /// found by the same scan that counts them.
    pub fn next_chunk_with_lines(&mut self) -> Result<Option<(Chunk, LineRanges)>, Error> {
        let Some(data) = self.cut()? else {
            return Ok(None);
        };
        let mut lines = Vec::with_capacity(data.len() / 256);
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', &data) {
            lines.push(start..end);
            start = end + 1;
        }
        let newlines = lines.len();
        if start < data.len() {
            lines.push(start..data.len());
        }
        let first_line = self.next_line;
        self.next_line += newlines;
        Ok(Some((Chunk { first_line, data }, lines)))
    }

    /// The bytes of the next chunk: whole lines, the partial last one kept for the next.
    fn cut(&mut self) -> Result<Option<Vec<u8>>, Error> {
        while !self.eof && self.pending.len() < self.chunk_bytes {
            self.fill()?;
            self.check_line_length()?;
        }
        let cut = if self.eof {
            self.pending.len()
        } else {
            match memchr::memrchr(b'\n', &self.pending) {
                Some(last) => last + 1,
                None => {
                    // One line longer than a chunk (but within the limit): read on.
                    while !self.eof && memchr::memchr(b'\n', &self.pending).is_none() {
                        self.fill()?;
                        self.check_line_length()?;
                    }
                    memchr::memrchr(b'\n', &self.pending).map_or(self.pending.len(), |i| i + 1)
                }
            }
        };
        if cut == 0 {
            return Ok(None);
        }
        // The next chunk's buffer, sized once (or a chunk given back), starts with this
        // one's partial last line.
        let mut next = match self.spare.take() {
            Some(mut spare) => {
                spare.clear();
                spare
            }
            None => Vec::with_capacity(self.chunk_bytes + 2 * READ_BLOCK),
        };
        next.extend_from_slice(&self.pending[cut..]);
        self.pending.truncate(cut);
        Ok(Some(std::mem::replace(&mut self.pending, next)))
    }

    /// Takes back the buffer of a chunk that is done with, for a later chunk: its pages are
    /// already mapped, so the kernel does not zero fresh ones for every chunk.
    pub fn recycle(&mut self, chunk: Chunk) {
        if chunk.data.capacity() >= self.chunk_bytes {
            self.spare = Some(chunk.data);
        }
    }

    /// Refuses a line that has grown past the limit without a newline, before reading
    /// more of it.
    fn check_line_length(&self) -> Result<(), Error> {
        let tail_start = memchr::memrchr(b'\n', &self.pending).map_or(0, |i| i + 1);
        if self.pending.len() - tail_start > LINE_LENGTH_MAX {
            let line =
                self.next_line + memchr::memchr_iter(b'\n', &self.pending[..tail_start]).count();
            return Err(Error::LineTooLong {
                line,
                length_max: LINE_LENGTH_MAX,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line with its number, through `next_chunk_with_lines`; `next_chunk` on
    /// the same text must start its chunks at the same line numbers.
    fn chunks(text: &[u8], size: usize) -> Vec<(usize, Vec<u8>)> {
        let mut reader = ChunkReader::new(text, Path::new("t"), size);
        let mut counted = ChunkReader::new(text, Path::new("t"), size);
        let mut out = Vec::new();
        while let Some((chunk, ranges)) = reader.next_chunk_with_lines().expect("chunk") {
            let same = counted
                .next_chunk()
                .expect("chunk")
                .expect("as many chunks");
            assert_eq!(same.first_line, chunk.first_line, "chunk size {size}");
            for (i, range) in ranges.into_iter().enumerate() {
                out.push((chunk.first_line + i, chunk.data[range].to_vec()));
            }
        }
        assert!(counted.next_chunk().expect("chunk").is_none());
        out
    }

    #[test]
    fn every_line_once_with_its_number_whatever_the_chunk_size() {
        let text = b"a\nbb\n\nccc\nd";
        for size in [1, 2, 3, 5, 100] {
            let got = chunks(text, size);
            let want: Vec<(usize, Vec<u8>)> = vec![
                (1, b"a".to_vec()),
                (2, b"bb".to_vec()),
                (3, b"".to_vec()),
                (4, b"ccc".to_vec()),
                (5, b"d".to_vec()),
            ];
            assert_eq!(got, want, "chunk size {size}");
        }
        assert_eq!(chunks(b"x\n", 1), vec![(1, b"x".to_vec())]);
        assert_eq!(
            chunks(b"x\ny\n", 1),
            vec![(1, b"x".to_vec()), (2, b"y".to_vec())]
        );
        assert!(chunks(b"", 4).is_empty());
    }

    #[test]
    fn an_endless_line_is_refused_with_its_number() {
        let mut text = b"ok\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', LINE_LENGTH_MAX + 10));
        let mut reader = ChunkReader::new(&text[..], Path::new("t"), 16);
        let error = loop {
            match reader.next_chunk() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("accepted an over-long line"),
                Err(e) => break e,
            }
        };
        assert!(
            matches!(error, Error::LineTooLong { line: 2, .. }),
            "{error:?}"
        );
    }
}
