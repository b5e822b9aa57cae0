//! Verifies an export file in one or two streaming passes, using every core.
//!
//! The verifier keeps every event hash for the checkpoints (which exports list after the
//! events) up to [`HASHES_PENDING_MAX`]; a longer export gets a pass 1 that reads the
//! file for checkpoint lines only, so that from then on pass 2 keeps just the hashes that
//! checkpoints name (memory does not grow with the file). Pass 2 is a
//! two-stage pipeline: a reader thread cuts the file into chunks of whole lines, parses
//! and hashes each chunk's lines in parallel (rayon; an event's hash depends only on its
//! own bytes) and verifies the chunk's 2FA signatures in Ed25519 batches, one batch per
//! core; the calling thread feeds the parsed lines, in order, to the one sequential
//! [`Verifier`] (links, seqs, the rules of `decide`), overlapping with the next chunk's
//! parsing. The verdict is exactly the one [`ledger_core::verify::verify_export`] gives on
//! the same text: the same parser, the same verifier, the same order.

use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::mpsc;

use ledger_core::crypto::KeySet;
use ledger_core::verify::{
    parse_line, prepare_signature, verify_pending_signatures, ExportLine, PendingSignature, Report,
    SignatureCache, UsageError, Verifier,
};
use rayon::prelude::*;

use crate::error::Error;
use crate::reader::{Chunk, ChunkReader};

/// Bytes per chunk: large enough to amortise the hand-off, small enough to bound memory.
pub const CHUNK_BYTES: usize = 4 << 20;
/// Chunks parsed ahead of the verifier.
const CHUNKS_AHEAD: usize = 2;
/// Most event hashes kept before pass 1 is asked which seqs checkpoints name (32 MiB of
/// hashes); past it pass 2 starts pass 1 and waits for it. An export of up to this many
/// events is read once.
pub const HASHES_PENDING_MAX: usize = 1 << 20;

/// How to verify.
#[derive(Debug)]
pub struct Options {
    /// Keys pinned by the auditor, or `None` to use the export's own key lines.
    pub pinned: Option<KeySet>,
    /// Advanced by the bytes verified in pass 2.
    pub progress: Option<indicatif::ProgressBar>,
    /// Bytes per chunk ([`CHUNK_BYTES`]; tests make it small to cross chunk boundaries).
    pub chunk_bytes: usize,
    /// Event hashes kept before pass 1 runs ([`HASHES_PENDING_MAX`]; tests make it small
    /// to take the two-pass path).
    pub hashes_pending_max: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            pinned: None,
            progress: None,
            chunk_bytes: CHUNK_BYTES,
            hashes_pending_max: HASHES_PENDING_MAX,
        }
    }
}

/// One line, parsed, or why it could not be.
type Parsed = Result<Option<(usize, ExportLine)>, Error>;

/// A parsed chunk, and its signatures being verified ahead (by a rayon task, beside the
/// parsing of the next chunk and the verifier).
struct Prepared {
    lines: Vec<Parsed>,
    cache: mpsc::Receiver<SignatureCache>,
    bytes: u64,
}

fn open(path: &Path) -> Result<File, Error> {
    File::open(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

/// Pass 1: the seqs that checkpoint lines name. Lines that do not parse are left for
/// pass 2 to report, in order.
fn checkpoint_seqs(file: File, path: &Path, chunk_bytes: usize) -> Result<Vec<u64>, Error> {
    let finder = memchr::memmem::Finder::new(b"checkpoint");
    let mut reader = ChunkReader::new(file, path, chunk_bytes);
    let mut seqs = Vec::new();
    while let Some(chunk) = reader.next_chunk()? {
        // Only lines that contain the word can be checkpoints: search the whole chunk for
        // it, and look at just those lines (each once).
        let data: &[u8] = &chunk.data;
        let mut from = 0;
        while let Some(found) = finder.find(&data[from..]) {
            let at = from + found;
            let start = memchr::memrchr(b'\n', &data[..at]).map_or(0, |i| i + 1);
            let end = memchr::memchr(b'\n', &data[at..]).map_or(data.len(), |i| at + i);
            let line = &data[start..end];
            from = end;
            // Canonical event lines start with their envelope (`"event"` sorts before
            // `"type"`); only other lines can be checkpoints.
            if line.starts_with(b"{\"event\":") {
                continue;
            }
            let Ok(text) = std::str::from_utf8(line) else {
                continue;
            };
            if let Ok(ExportLine::Checkpoint(checkpoint)) = parse_line(text) {
                seqs.push(checkpoint.seq);
            }
        }
        reader.recycle(chunk);
    }
    Ok(seqs)
}

fn parse_one(number: usize, line: &[u8]) -> Parsed {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let text = std::str::from_utf8(line).map_err(|e| Error::NotUtf8 {
        line: number,
        offset: e.valid_up_to(),
    })?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let parsed = parse_line(text).map_err(|error| UsageError::Line {
        line: number,
        error,
    })?;
    Ok(Some((number, parsed)))
}

/// Parses a chunk in parallel, prepares its proofs' signatures in parallel (hash of
/// `R || A || M`, decompression of `R`: per-proof work), and starts their verification as
/// one Ed25519 batch on the rayon pool, where it runs beside the parsing of the next chunk
/// and the verifier. `keys` are the keys known before the chunk; key lines inside it are
/// added first.
/// The lines are parsed into `lines`, a spent chunk's buffer (emptied) or a new one.
fn prepare(
    chunk: &Chunk,
    ranges: &[Range<usize>],
    keys: &mut KeySet,
    pinned: bool,
    mut lines: Vec<Parsed>,
) -> Prepared {
    let numbered: Vec<(usize, &[u8])> = ranges
        .iter()
        .enumerate()
        .map(|(i, range)| (chunk.first_line + i, &chunk.data[range.clone()]))
        .collect();
    numbered
        .par_iter()
        .with_min_len(256)
        .map(|(number, line)| parse_one(*number, line))
        .collect_into_vec(&mut lines);
    if !pinned {
        for (_, line) in lines.iter().flatten().flatten() {
            if let ExportLine::Key(record) = line {
                // A conflicting record is the verifier's to report; the cache is keyed
                // by the public key that verified, so a wrong guess here is harmless.
                let _ = keys.insert(record.clone());
            }
        }
    }
    let keys: &KeySet = keys;
    let pending: Vec<PendingSignature> = lines
        .par_iter()
        .with_min_len(256)
        .filter_map(|line| match line {
            Ok(Some((_, ExportLine::Event(parsed)))) if parsed.body_error.is_none() => parsed
                .event
                .body
                .two_factor()
                .and_then(|proof| prepare_signature(keys, proof)),
            Ok(_) | Err(_) => None,
        })
        .collect();
    let (sender, cache) = mpsc::sync_channel(1);
    rayon::spawn(move || {
        let _ = sender.send(verify_pending_signatures(pending));
    });
    Prepared {
        lines,
        cache,
        bytes: chunk.data.len() as u64,
    }
}

/// Verifies the export at `path`.
///
/// The verifier keeps every event hash until it holds more than
/// [`Options::hashes_pending_max`]; then pass 1 runs on its own thread and pass 2 waits
/// for its checkpoint seqs, keeping only the hashes they name from then on, so memory
/// stays bounded. A failure of pass 1 is reported before anything pass 2 found, as when
/// the passes ran one after the other. The spent verifier (a long chain's state) is freed
/// on a thread of its own, off the answer's path.
pub fn verify_file(path: &Path, options: Options) -> Result<Report, Error> {
    let chunk_bytes = options.chunk_bytes;
    let hashes_pending_max = options.hashes_pending_max;
    let file = open(path)?;
    let mut verifier = Verifier::new(options.pinned.clone());
    let pinned = options.pinned.is_some();
    let mut keys = options.pinned.unwrap_or_default();
    let progress = options.progress;

    std::thread::scope(|scope| {
        let (sender, receiver) = mpsc::sync_channel::<Result<Prepared, Error>>(CHUNKS_AHEAD);
        // Verified lines go back to the reader thread to be freed there, off the
        // sequential stage; their buffers are reused for the next chunks (no page of a
        // chunk's lines is allocated twice).
        let (done_sender, done_receiver) = mpsc::channel::<(Vec<Parsed>, SignatureCache)>();
        scope.spawn(move || {
            let mut reader = ChunkReader::new(file, path, chunk_bytes);
            let mut spare: Vec<Vec<Parsed>> = Vec::new();
            loop {
                while let Ok((mut lines, cache)) = done_receiver.try_recv() {
                    lines.clear();
                    spare.push(lines);
                    drop(cache);
                }
                let next = match reader.next_chunk_with_lines() {
                    Ok(Some((chunk, ranges))) => {
                        let lines = spare.pop().unwrap_or_default();
                        let prepared = prepare(&chunk, &ranges, &mut keys, pinned, lines);
                        reader.recycle(chunk);
                        Ok(prepared)
                    }
                    Ok(None) => break,
                    Err(e) => Err(e),
                };
                let stop = next.is_err();
                if sender.send(next).is_err() || stop {
                    break;
                }
            }
        });
        let mut pass_one_done = false;
        let mut pass_one_failed = None;
        let pass_two = (|| {
            for prepared in receiver {
                let mut prepared = prepared?;
                let cache = match prepared.cache.recv() {
                    Ok(cache) => cache,
                    Err(mpsc::RecvError) => unreachable!("the batch task always answers"),
                };
                let mut lines = std::mem::take(&mut prepared.lines);
                for line in lines.iter_mut() {
                    // Event lines by reference (a line is a few hundred bytes: not moved
                    // out and back), the rare others taken.
                    match line {
                        Ok(Some((number, ExportLine::Event(parsed)))) => {
                            verifier.push_event_line(*number, parsed, &cache)?;
                        }
                        Ok(None) => {}
                        Ok(Some(_)) | Err(_) => match std::mem::replace(line, Ok(None)) {
                            Ok(Some((number, parsed))) => verifier.push(number, parsed, &cache)?,
                            Ok(None) => {}
                            Err(e) => return Err(e),
                        },
                    }
                }
                // The reader thread may have stopped; then the lines are freed here.
                let _ = done_sender.send((lines, cache));
                if let Some(progress) = &progress {
                    progress.inc(prepared.bytes);
                }
                if !pass_one_done && verifier.hashes_kept() > hashes_pending_max {
                    pass_one_done = true;
                    match open(path).and_then(|file| checkpoint_seqs(file, path, chunk_bytes)) {
                        Ok(seqs) => verifier.expect_checkpoints(seqs),
                        Err(e) => {
                            pass_one_failed = Some(e);
                            return Ok(());
                        }
                    }
                }
            }
            Ok::<(), Error>(())
        })();
        // Pass 1 reads the whole file: its failure first.
        if let Some(e) = pass_one_failed {
            return Err(e);
        }
        pass_two?;
        Ok::<(), Error>(())
    })?;
    // The checkpoints' signatures (one per thousand events) over every core: at the end
    // of the run nothing else is left to overlap with.
    let (report, spent) = verifier.finish_keeping_state(|keys, checkpoints| {
        checkpoints
            .par_iter()
            .map(|checkpoint| checkpoint.verify_signature(keys))
            .collect()
    });
    // Freeing half a million open payouts takes a tenth of a second; the answer need not
    // wait for it (and a process that exits right after never pays it).
    std::thread::spawn(move || drop(spent));
    Ok(report?)
}
