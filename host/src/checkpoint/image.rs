//! A guest's memory as checkpoint objects: the pages written since the
//! checkpoint before, or every page that is not zero (a whole image), and
//! how a chain of them is put back together on restore.
//!
//! The object is `MAGIC`, the memory's length (u64), the page count (u32),
//! the page indices (u32 each, increasing), then the pages, all little-endian.

use super::{CheckpointMeta, CheckpointRef, ImageMeta, MAX_LINKS};
use std::sync::Arc;

use crate::runtime::PAGE;

const MAGIC: &[u8; 8] = b"weirpg01";

/// The most a 32-bit wasm memory can hold: an image claiming more is
/// malformed, and is refused before a restore sizes anything by it.
const MAX_MEMORY_LEN: u64 = 1 << 32;

/// Some pages of a memory of `memory_len` bytes: the rest are as they were
/// in the image these are written over (zero, in a whole image).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pages {
    /// The memory's length when they were taken.
    pub memory_len: u64,
    indices: Vec<u32>,
    data: Vec<u8>,
}

impl Pages {
    /// The pages `indices` (increasing) of `memory`, copied.
    pub fn copy(memory: &[u8], indices: Vec<u32>) -> Pages {
        let mut data = Vec::with_capacity(indices.len() * PAGE);
        for &page in &indices {
            let at = page as usize * PAGE;
            data.extend_from_slice(&memory[at..at + PAGE]);
        }
        Pages {
            memory_len: memory.len() as u64,
            indices,
            data,
        }
    }

    /// Every page of `memory` that is not all zero: an image that needs no
    /// other to restore.
    pub fn whole(memory: &[u8]) -> Pages {
        let indices = memory
            .chunks(PAGE)
            .enumerate()
            .filter(|(_, page)| page.iter().any(|&b| b != 0))
            .map(|(i, _)| i as u32)
            .collect();
        Pages::copy(memory, indices)
    }

    /// How many pages.
    pub fn count(&self) -> usize {
        self.indices.len()
    }

    /// These pages with `newer` written over them: what a checkpoint that
    /// was never committed carries into the next.
    pub fn merge(self, newer: Pages) -> Pages {
        if self.indices.is_empty() {
            return newer;
        }
        let (mut indices, mut data) = (Vec::new(), Vec::new());
        let (mut a, mut b) = (0, 0);
        while a < self.indices.len() || b < newer.indices.len() {
            let take_newer = match (self.indices.get(a), newer.indices.get(b)) {
                (Some(old), Some(new)) => new <= old,
                (None, Some(_)) => true,
                _ => false,
            };
            if take_newer {
                if self.indices.get(a) == newer.indices.get(b) {
                    a += 1;
                }
                indices.push(newer.indices[b]);
                data.extend_from_slice(&newer.data[b * PAGE..(b + 1) * PAGE]);
                b += 1;
            } else {
                indices.push(self.indices[a]);
                data.extend_from_slice(&self.data[a * PAGE..(a + 1) * PAGE]);
                a += 1;
            }
        }
        Pages {
            memory_len: self.memory_len.max(newer.memory_len),
            indices,
            data,
        }
    }

    /// Writes these pages into `memory`, first grown to their length.
    pub fn apply(&self, memory: &mut Vec<u8>) {
        let len = usize::try_from(self.memory_len).unwrap_or(usize::MAX);
        if memory.len() < len {
            memory.resize(len, 0);
        }
        for (i, &page) in self.indices.iter().enumerate() {
            let at = page as usize * PAGE;
            memory[at..at + PAGE].copy_from_slice(&self.data[i * PAGE..(i + 1) * PAGE]);
        }
    }

    /// The object's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + self.indices.len() * 4 + self.data.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.memory_len.to_le_bytes());
        out.extend_from_slice(&(self.indices.len() as u32).to_le_bytes());
        for page in &self.indices {
            out.extend_from_slice(&page.to_le_bytes());
        }
        out.extend_from_slice(&self.data);
        out
    }

    /// The memory's length an object says, if it is one.
    pub fn memory_len_of(raw: &[u8]) -> Option<u64> {
        let len = raw.strip_prefix(MAGIC)?.get(..8)?;
        Some(u64::from_le_bytes(len.try_into().ok()?))
    }

    /// Reads an object back; anything malformed is an error, never a panic.
    pub fn decode(raw: &[u8]) -> Result<Pages, String> {
        let rest = raw.strip_prefix(MAGIC).ok_or("not a memory image (no magic)")?;
        let (len, rest) = rest.split_at_checked(8).ok_or("truncated")?;
        let memory_len = u64::from_le_bytes(len.try_into().expect("8 bytes"));
        let (count, rest) = rest.split_at_checked(4).ok_or("truncated")?;
        let count = u32::from_le_bytes(count.try_into().expect("4 bytes")) as usize;
        let (index_bytes, data) = rest
            .split_at_checked(count.checked_mul(4).ok_or("too many pages")?)
            .ok_or("truncated")?;
        if Some(data.len()) != count.checked_mul(PAGE) {
            return Err(format!("{} bytes of pages for {count} pages", data.len()));
        }
        let indices: Vec<u32> = index_bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        let in_order = indices.windows(2).all(|w| w[0] < w[1]);
        let fits = indices
            .last()
            .is_none_or(|&last| (last as u64 + 1) * PAGE as u64 <= memory_len);
        if memory_len > MAX_MEMORY_LEN {
            return Err(format!("a memory of {memory_len} bytes, past a wasm memory's 4 GiB"));
        }
        if !in_order || !fits || memory_len % PAGE as u64 != 0 {
            return Err("page indices out of order or past the memory's end".into());
        }
        Ok(Pages {
            memory_len,
            indices,
            data: data.to_vec(),
        })
    }
}

/// The newest committed image and the chain it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainEnd {
    /// The checkpoint.
    pub checkpoint: CheckpointRef,
    /// Checkpoints in its chain, itself included.
    pub links: u32,
    /// Bytes of their snapshots.
    pub bytes: u64,
}

/// What the next checkpoint of memory writes.
#[derive(Debug)]
pub enum NextImage {
    /// Pages needing nothing under them.
    Whole(Arc<Pages>),
    /// Pages over `over`'s chain.
    Over {
        /// The chain's end.
        over: ChainEnd,
        /// The pages.
        pages: Arc<Pages>,
    },
    /// Pages over a chain that would grow too long: the memory they stand
    /// for must be read back and written whole.
    Compact {
        /// The chain's end.
        over: ChainEnd,
        /// The pages.
        pages: Arc<Pages>,
    },
}

impl ImageMeta {
    /// The meta of an image by `module_sha256` whose snapshot is `bytes`
    /// long, written over `over` (none: whole).
    pub fn over(module_sha256: &str, over: Option<ChainEnd>, bytes: u64) -> ImageMeta {
        ImageMeta {
            module_sha256: module_sha256.to_string(),
            over: over.map(|o| o.checkpoint),
            links: over.map_or(1, |o| o.links + 1),
            chain_bytes: over.map_or(0, |o| o.bytes) + bytes,
        }
    }
}

impl ChainEnd {
    /// The chain a committed checkpoint ends, if it is an image.
    pub fn of(meta: &CheckpointMeta) -> Option<ChainEnd> {
        let image = meta.image.as_ref()?;
        Some(ChainEnd {
            checkpoint: meta.checkpoint,
            links: image.links,
            bytes: image.chain_bytes,
        })
    }
}

/// The committer's side of a job's memory images: the pages taken since
/// the newest committed image (those of a checkpoint that was never
/// committed ride with the next one), and that image's chain.
#[derive(Debug, Default)]
pub struct Chain {
    /// Pages taken and not yet uploaded, merged; and whether they need no
    /// image under them.
    pending: Option<(Pages, bool)>,
    /// The pages of the upload in progress.
    uploading: Option<(Arc<Pages>, bool)>,
    end: Option<ChainEnd>,
}

impl Chain {
    /// The chain an attempt restored from a checkpoint ending `end` carries on.
    pub fn after(end: Option<ChainEnd>) -> Chain {
        Chain {
            end,
            ..Chain::default()
        }
    }

    /// Takes the pages of a barrier (`whole`: all of the memory's).
    pub fn add(&mut self, pages: Pages, whole: bool) {
        self.pending = Some(match self.pending.take() {
            Some((older, older_whole)) if !whole => (older.merge(pages), older_whole),
            _ => (pages, whole),
        });
    }

    /// A barrier took the SDK's snapshot instead: pages taken before it
    /// are of no use (the next are whole).
    pub fn serialized(&mut self) {
        self.pending = None;
    }

    /// What the next upload writes, if the barrier brought pages.
    pub fn next(&mut self) -> Option<NextImage> {
        let (pages, whole) = self.pending.take()?;
        let pages = Arc::new(pages);
        self.uploading = Some((pages.clone(), whole));
        Some(match self.end {
            Some(over) if !whole => {
                let bytes = over.bytes + (pages.count() * PAGE) as u64;
                if over.links as usize >= MAX_LINKS || bytes > pages.memory_len {
                    NextImage::Compact { over, pages }
                } else {
                    NextImage::Over { over, pages }
                }
            }
            _ => NextImage::Whole(pages),
        })
    }

    /// The upload failed: its pages ride with the next.
    pub fn failed(&mut self) {
        if let Some((older, whole)) = self.uploading.take() {
            let newer = self.pending.replace((Arc::unwrap_or_clone(older), whole));
            if let Some((pages, whole)) = newer {
                self.add(pages, whole);
            }
        }
    }

    /// The upload was committed as `end` (none: it was the SDK's snapshot).
    pub fn committed(&mut self, end: Option<ChainEnd>) {
        self.uploading = None;
        self.end = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(pages: usize) -> Vec<u8> {
        (0..pages * PAGE).map(|i| (i / PAGE) as u8 + 1).collect()
    }

    #[test]
    fn a_chain_of_pages_rebuilds_the_memory_it_was_taken_from() {
        let mut live = memory(8);
        live[..PAGE].fill(0);
        let whole = Pages::whole(&live);
        assert_eq!(whole.count(), 7, "the zero page is left out");
        live[2 * PAGE] = 9;
        live.resize(10 * PAGE, 0);
        live[9 * PAGE + 1] = 4;
        let first = Pages::copy(&live, vec![2, 9]);
        live[2 * PAGE] = 10;
        live[4 * PAGE] = 11;
        let second = Pages::copy(&live, vec![2, 4]);
        // The first delta never committed: the second carries it.
        let carried = first.clone().merge(second.clone());
        assert_eq!(carried.indices, vec![2, 4, 9]);
        for chain in [vec![&whole, &first, &second], vec![&whole, &carried]] {
            let mut rebuilt = Vec::new();
            for pages in chain {
                let back = Pages::decode(&pages.encode()).unwrap();
                assert_eq!(&back, pages);
                back.apply(&mut rebuilt);
            }
            assert_eq!(rebuilt, live);
        }
    }

    #[test]
    fn an_image_past_a_wasm_memory_is_refused() {
        let mut pages = Pages::copy(&vec![1; 2 * PAGE], vec![1]);
        pages.memory_len = MAX_MEMORY_LEN + PAGE as u64;
        let err = Pages::decode(&pages.encode()).unwrap_err();
        assert!(err.contains("past a wasm memory's 4 GiB"), "{err}");
        pages.memory_len = MAX_MEMORY_LEN;
        assert!(Pages::decode(&pages.encode()).is_ok(), "4 GiB itself is a wasm memory");
    }

    proptest::proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let mut raw = MAGIC.to_vec();
            raw.extend_from_slice(&bytes);
            let _ = Pages::decode(&raw);
            let _ = Pages::decode(&bytes);
        }
    }
}
