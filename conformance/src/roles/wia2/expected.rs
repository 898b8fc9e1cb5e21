//! What a download stream should hold: the image file of one unit of the item (a flatbed image,
//! one feeder page, one folder child, or every page of a multi-page file), rendered on demand
//! from the device's image so that writes and finished streams can be checked by CRC.

use scanemu::engine::{ImageSource, ScanJob};

use crate::driver::wia2::ImageFormat;

/// The image file one stream should receive after what it already held.
#[derive(Clone, Debug)]
pub(crate) struct ExpectedFile {
    format: ImageFormat,
    job: ScanJob,
    /// The device page the file starts with (feeder, TYMED_FILE: the stream's page).
    first_page: u16,
    /// Pages in the file; `None` for a multi-page file whose end is not known yet.
    pages: Option<u32>,
    image: ImageSource,
}

impl ExpectedFile {
    /// The file of `pages` pages of `job` from device page `first_page` (`None`: as many as
    /// the device scans).
    pub(crate) fn new(
        format: ImageFormat,
        job: ScanJob,
        first_page: u16,
        pages: Option<u32>,
    ) -> ExpectedFile {
        ExpectedFile {
            format,
            job,
            first_page,
            pages,
            image: ImageSource::Pattern,
        }
    }

    fn page_len(&self) -> u64 {
        self.format.page_file_len(&self.job)
    }

    /// The file's length with `pages` pages.
    pub(crate) fn len_with(&self, pages: u32) -> u64 {
        self.page_len() * u64::from(pages)
    }

    /// The file's length, if its page count is known.
    pub(crate) fn len(&self) -> Option<u64> {
        self.pages.map(|p| self.len_with(p))
    }

    /// Fills `out` with the file's bytes from offset `from`; bytes past the file's end (its
    /// known page count, else `limit_pages`) are zero.
    pub(crate) fn fill(&self, from: u64, out: &mut [u8], limit_pages: u32) {
        out.fill(0);
        let header = self.format.page_header(&self.job);
        let page_len = self.page_len();
        let pages = u64::from(self.pages.unwrap_or(limit_pages));
        let end = page_len * pages;
        let bpl = self.job.bytes_per_line();
        let mut line = vec![0u8; usize::try_from(bpl).unwrap_or(0)];
        let mut cached: Option<(u16, u32)> = None;
        for (i, b) in out.iter_mut().enumerate() {
            let at = from + i as u64;
            if at >= end || page_len == 0 {
                break;
            }
            let (page, off) = (at / page_len, at % page_len);
            let head = header.len() as u64;
            if off < head {
                *b = header[off as usize];
                continue;
            }
            let pos = off - head;
            if bpl == 0 {
                continue;
            }
            let device_page = self.first_page.saturating_add(page as u16);
            let l = (pos / bpl) as u32;
            if cached != Some((device_page, l)) {
                self.image.render_line(&self.job, device_page, l, &mut line);
                cached = Some((device_page, l));
            }
            *b = line[(pos % bpl) as usize];
        }
    }
}

/// What a stream should hold in all: its earlier content, then its file.
#[derive(Clone, Debug)]
pub(crate) struct Expected {
    /// The bytes the stream held when the application gave it.
    pub prefix: Vec<u8>,
    /// The file after them.
    pub file: ExpectedFile,
}

impl Expected {
    /// CRC-32 of what belongs at `[from, from + len)` of the stream.
    pub(crate) fn crc_at(&self, from: u64, len: u64, limit_pages: u32) -> u32 {
        let mut hasher = crc32fast::Hasher::new();
        let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
        let base = self.prefix.len() as u64;
        for (i, b) in buf.iter_mut().enumerate() {
            let at = from + i as u64;
            if at < base {
                *b = self.prefix[at as usize];
            }
        }
        if from + len > base {
            let start = from.max(base);
            let skip = (start - from) as usize;
            self.file.fill(start - base, &mut buf[skip..], limit_pages);
        }
        hasher.update(&buf);
        hasher.finalize()
    }

    /// Length and CRC-32 of the whole expected content with `pages` pages (used when the file's
    /// page count was not known in advance).
    pub(crate) fn whole(&self, pages: u32) -> (u64, u32) {
        let len = self.prefix.len() as u64 + self.file.len().unwrap_or(self.file.len_with(pages));
        (len, self.crc_at(0, len, pages))
    }
}
