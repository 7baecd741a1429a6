//! Keeping the bytes of an upload for extraction while they stream past.
//!
//! The first bytes that are not white space (after an optional UTF-8 byte-order
//! mark) decide the format ([`detect`]); a body that is blank so far is
//! undecided. Each chunk is looked at once: the work is linear in the body and
//! the memory is bounded by the extraction limit. Leading white space is kept
//! only up to [`BLANK_KEPT`] bytes (counted beyond that, never stored), so a body
//! of nothing but white space holds a few KiB however long it is. The price is
//! that error positions in a document with more leading white space than that
//! count from where the kept part ends.

use zeroize::Zeroizing;

use super::{detect, Format};

/// Leading white space kept verbatim; more is counted, not stored.
pub const BLANK_KEPT: usize = 4096;

const BOM: [u8; 3] = *b"\xEF\xBB\xBF";

/// The bytes of an upload kept for extraction.
#[derive(Debug)]
pub struct Capture {
    state: State,
    /// Bytes fed so far (kept, dropped blank and all).
    seen: u64,
}

#[derive(Debug)]
enum State {
    Off,
    /// Too little seen to tell the format: white space (and a byte-order mark, of
    /// which `bom` bytes were seen), then fewer than [`DECIDING_BYTES`] bytes of
    /// content (`content`). `head` holds the first [`BLANK_KEPT`] blank bytes and
    /// the content.
    Undecided {
        head: Zeroizing<Vec<u8>>,
        bom: usize,
        content: usize,
    },
    On(Format, Zeroizing<Vec<u8>>),
    Overflow(Format),
}

/// Content bytes that tell the format (`ISA`, or `{`).
const DECIDING_BYTES: usize = 3;
/// The same for UTF-16 text: `ISA` after a byte-order mark.
const UTF16_DECIDING_BYTES: usize = 8;

/// Whether the content seen so far (`content`, the end of `head`) tells the
/// format: 3 bytes, or 8 when they look like UTF-16 (a byte-order mark, or a
/// NUL among the first two).
fn can_decide(head: &[u8], content: usize) -> bool {
    let seen = &head[head.len().saturating_sub(content)..];
    let utf16 = seen.starts_with(&[0xFF, 0xFE])
        || seen.starts_with(&[0xFE, 0xFF])
        || seen.iter().take(2).any(|&b| b == 0);
    content
        >= if utf16 {
            UTF16_DECIDING_BYTES
        } else {
            DECIDING_BYTES
        }
}

/// Where a capture is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Not capturing: disabled, or the body is not a format fields come from.
    Off,
    /// Too little seen to tell the format (only white space, say).
    Undecided,
    /// Capturing a document of this format.
    On(Format),
    /// A document of this format larger than the limit.
    Overflow(Format),
}

/// What a capture holds once the body has ended.
#[derive(Debug)]
pub enum Captured {
    /// Nothing to extract from.
    Nothing,
    /// A whole document (leading white space beyond [`BLANK_KEPT`] left out).
    Document(Format, Zeroizing<Vec<u8>>),
    /// A document of this format larger than the limit.
    TooLarge(Format),
}

impl Capture {
    /// A capture, or one that never keeps anything.
    pub fn start(enabled: bool) -> Capture {
        let state = if enabled {
            State::Undecided {
                head: Zeroizing::new(Vec::new()),
                bom: 0,
                content: 0,
            }
        } else {
            State::Off
        };
        Capture { state, seen: 0 }
    }

    /// Where the capture is.
    pub fn stage(&self) -> Stage {
        match &self.state {
            State::Off => Stage::Off,
            State::Undecided { .. } => Stage::Undecided,
            State::On(format, _) => Stage::On(*format),
            State::Overflow(format) => Stage::Overflow(*format),
        }
    }

    /// Bytes of memory the capture holds.
    pub fn held(&self) -> usize {
        match &self.state {
            State::Undecided { head: bytes, .. } | State::On(_, bytes) => bytes.capacity(),
            State::Off | State::Overflow(_) => 0,
        }
    }

    /// Takes the next chunk of the body; the document captured is at most
    /// `limit` bytes (beyond, the capture overflows and lets its bytes go).
    pub fn feed(&mut self, chunk: &[u8], content_type: &str, limit: u64) {
        let before = self.seen;
        self.seen = self.seen.saturating_add(chunk.len() as u64);
        let over = self.seen > limit;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let next = match &mut self.state {
            State::Off | State::Overflow(_) => None,
            State::On(format, _) if over => Some(State::Overflow(*format)),
            State::On(_, bytes) => {
                append(bytes, chunk, limit);
                None
            }
            State::Undecided { head, bom, content } => {
                let mut rest = chunk;
                if *content == 0 {
                    let blank_len = blank_prefix(chunk, before, bom);
                    let room = BLANK_KEPT.saturating_sub(head.len());
                    append(head, &chunk[..blank_len.min(room)], limit);
                    rest = &chunk[blank_len..];
                }
                let taken = rest
                    .len()
                    .min(UTF16_DECIDING_BYTES - (*content).min(UTF16_DECIDING_BYTES));
                append(head, &rest[..taken], limit);
                *content += taken;
                rest = &rest[taken..];
                if can_decide(head, *content) || over {
                    Some(match detect(head, content_type) {
                        Some(format) if over => State::Overflow(format),
                        Some(format) => {
                            let mut bytes = std::mem::take(head);
                            append(&mut bytes, rest, limit);
                            State::On(format, bytes)
                        }
                        None => State::Off,
                    })
                } else {
                    None
                }
            }
        };
        if let Some(next) = next {
            self.state = next;
        }
    }

    /// What was captured, once the body has ended. A body that was all blank is
    /// a document only when its content type names a format.
    pub fn finish(self, content_type: &str) -> Captured {
        match self.state {
            State::Off => Captured::Nothing,
            State::Undecided { head, .. } => match detect(&head, content_type) {
                Some(format) => Captured::Document(format, head),
                None => Captured::Nothing,
            },
            State::On(format, bytes) => Captured::Document(format, bytes),
            State::Overflow(format) => Captured::TooLarge(format),
        }
    }
}

/// How many bytes of `chunk` (which starts `before` bytes into a body blank so
/// far) are blank: white space, or a byte-order mark at the start of the body
/// (`bom` counts its bytes seen). A byte-order mark cut short is content, as
/// [`detect`] reads it.
fn blank_prefix(chunk: &[u8], before: u64, bom: &mut usize) -> usize {
    let mut at = 0;
    while let Some(&byte) = chunk.get(at) {
        let position = before.saturating_add(at as u64);
        if position >= BOM.len() as u64 || position != *bom as u64 {
            break;
        }
        if byte == BOM[*bom] {
            *bom += 1;
        } else if *bom > 0 {
            return at;
        } else {
            break;
        }
        at += 1;
    }
    let rest = &chunk[at..];
    at + rest
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(rest.len())
}

/// Appends to a buffer of secrets, never leaving a copy behind: when the buffer
/// must grow, the old allocation is wiped as it is dropped (a plain `Vec` would
/// free it as it is). Grows by doubling, up to `limit`.
fn append(bytes: &mut Zeroizing<Vec<u8>>, more: &[u8], limit: usize) {
    let needed = bytes.len().saturating_add(more.len());
    if needed > bytes.capacity() {
        let capacity = bytes.capacity().saturating_mul(2).min(limit).max(needed);
        let mut grown = Zeroizing::new(Vec::with_capacity(capacity));
        grown.extend_from_slice(bytes);
        *bytes = grown;
    }
    bytes.extend_from_slice(more);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MIB: u64 = 1 << 20;

    fn captured(capture: Capture, content_type: &str) -> Option<(Format, Vec<u8>)> {
        match capture.finish(content_type) {
            Captured::Document(format, bytes) => Some((format, bytes.to_vec())),
            Captured::Nothing => None,
            Captured::TooLarge(format) => panic!("{format} overflowed"),
        }
    }

    #[test]
    fn binary_uploads_are_not_captured() {
        let mut capture = Capture::start(true);
        capture.feed(b"%PDF-1.7 ...", "application/pdf", MIB);
        assert_eq!(capture.stage(), Stage::Off);
        assert_eq!(capture.held(), 0);
        let mut capture = Capture::start(false);
        capture.feed(b"ISA*00*", "application/edi-x12", MIB);
        assert_eq!(capture.stage(), Stage::Off);
    }

    #[test]
    fn x12_is_captured_until_the_limit() {
        let mut capture = Capture::start(true);
        capture.feed(b"  ", "text/plain", 16);
        assert_eq!(capture.stage(), Stage::Undecided);
        capture.feed(b"ISA*00*", "text/plain", 16);
        assert_eq!(capture.stage(), Stage::On(Format::X12));
        capture.feed(b"0123456789", "text/plain", 16);
        assert_eq!(capture.stage(), Stage::Overflow(Format::X12));
        assert_eq!(capture.held(), 0, "an overflowed capture lets its bytes go");
        assert!(matches!(
            capture.finish("text/plain"),
            Captured::TooLarge(Format::X12)
        ));
    }

    #[test]
    fn leading_white_space_is_counted_not_kept() {
        let mut capture = Capture::start(true);
        let spaces = [b' '; 4096];
        for _ in 0..256 {
            capture.feed(&spaces, "text/plain", 16 * MIB);
            assert_eq!(capture.stage(), Stage::Undecided);
            assert!(capture.held() <= 2 * BLANK_KEPT, "{}", capture.held());
        }
        capture.feed(b"\r\nISA*00*", "text/plain", 16 * MIB);
        assert_eq!(capture.stage(), Stage::On(Format::X12));
        let (format, bytes) = captured(capture, "text/plain").unwrap();
        assert_eq!(format, Format::X12);
        // The blank beyond the first BLANK_KEPT bytes (the CR LF too) is gone.
        let mut expected = vec![b' '; BLANK_KEPT];
        expected.extend_from_slice(b"ISA*00*");
        assert_eq!(bytes, expected);
    }

    #[test]
    fn a_blank_body_is_told_by_its_content_type() {
        for (content_type, stage) in [
            ("application/edi-x12", Stage::Overflow(Format::X12)),
            ("text/plain", Stage::Off),
        ] {
            let mut capture = Capture::start(true);
            for _ in 0..5 {
                capture.feed(&[b'\n'; 1000], content_type, 4096);
            }
            assert_eq!(capture.stage(), stage, "{content_type}");
        }
        let mut capture = Capture::start(true);
        capture.feed(b"\xEF\xBB\xBF \n", "application/fhir+json", MIB);
        let (format, bytes) = captured(capture, "application/fhir+json").unwrap();
        assert_eq!(
            (format, bytes.as_slice()),
            (Format::Fhir, &b"\xEF\xBB\xBF \n"[..])
        );
    }

    fn input() -> impl Strategy<Value = Vec<u8>> {
        let lead = prop_oneof![
            Just(&b""[..]),
            Just(&b"\xEF\xBB\xBF"[..]),
            Just(&b"\xEF\xBB"[..]),
            Just(&b"\xEF"[..]),
        ];
        let blank = "[ \t\r\n]{0,6}";
        let body = prop_oneof![
            Just(&b""[..]),
            Just(&b"ISA*00*~"[..]),
            Just(&b"IS"[..]),
            Just(&b"I"[..]),
            Just(&b"{\"a\": 1}"[..]),
            Just(&b"%PDF-1.7"[..]),
            Just(&b"\xEF\xBB\xBFISA"[..]),
        ];
        (lead, blank, body).prop_map(|(lead, blank, body)| {
            let mut bytes = lead.to_vec();
            bytes.extend_from_slice(blank.as_bytes());
            bytes.extend_from_slice(body);
            bytes
        })
    }

    proptest! {
        /// However the body is cut into chunks, the capture holds what reading the
        /// whole body at once finds.
        #[test]
        fn chunking_does_not_change_what_is_captured(
            bytes in input(),
            cuts in proptest::collection::vec(1usize..4, 0..12),
            content_type in prop_oneof![Just("text/plain"), Just("application/edi-x12"), Just("application/json")],
        ) {
            let mut capture = Capture::start(true);
            let mut rest = bytes.as_slice();
            for cut in cuts {
                let (chunk, tail) = rest.split_at(cut.min(rest.len()));
                capture.feed(chunk, content_type, MIB);
                rest = tail;
            }
            capture.feed(rest, content_type, MIB);
            let expected = detect(&bytes, content_type).map(|format| (format, bytes.clone()));
            prop_assert_eq!(captured(capture, content_type), expected);
        }
    }
}
