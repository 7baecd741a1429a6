//! X12 written as UTF-16 (Windows tools save interchanges so, little- or
//! big-endian, with or without a byte-order mark): told from its first bytes and
//! turned into UTF-8 for the reader. The document is stored as it was sent;
//! only the extraction reads the UTF-8 copy, which is wiped when dropped.

use zeroize::Zeroizing;

use super::{ExtractError, Format};

/// The byte order of UTF-16 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    /// Least significant byte first (Windows' "Unicode").
    Little,
    /// Most significant byte first.
    Big,
}

/// Whether `bytes` are UTF-16 text, and in which order: a byte-order mark, or
/// without one an interchange's `ISA` in either order. UTF-8 (and its
/// byte-order mark) is not.
pub fn byte_order(bytes: &[u8]) -> Option<ByteOrder> {
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(b"I\0S\0A\0") {
        Some(ByteOrder::Little)
    } else if bytes.starts_with(&[0xFE, 0xFF]) || bytes.starts_with(b"\0I\0S\0A") {
        Some(ByteOrder::Big)
    } else {
        None
    }
}

/// The first characters of UTF-16 `bytes` (after a byte-order mark), as far as
/// they decode: enough to tell a format by.
pub fn head(bytes: &[u8], order: ByteOrder, chars: usize) -> String {
    char::decode_utf16(units(bytes, order).take(chars))
        .map_while(Result::ok)
        .collect()
}

/// UTF-16 `bytes` as UTF-8 (without the byte-order mark); an odd length or an
/// unpaired surrogate is refused with its byte position.
pub fn to_utf8(bytes: &[u8], order: ByteOrder) -> Result<Zeroizing<Vec<u8>>, ExtractError> {
    let skipped = if has_mark(bytes) { 2 } else { 0 };
    if bytes.len() % 2 != 0 {
        return Err(invalid(
            bytes.len() - 1,
            "UTF-16 text of an odd number of bytes",
        ));
    }
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len() / 2 + bytes.len() / 8));
    let mut buffer = [0u8; 4];
    let mut position = skipped;
    for decoded in char::decode_utf16(units(bytes, order)) {
        let c = decoded.map_err(|_| invalid(position, "an unpaired UTF-16 surrogate"))?;
        let encoded = c.encode_utf8(&mut buffer);
        // Grows only by doubling within the capacity reserved above for ASCII
        // text; beyond it the old buffer is wiped as it goes.
        if out.len() + encoded.len() > out.capacity() {
            let mut grown = Zeroizing::new(Vec::with_capacity(out.capacity() * 2 + 4));
            grown.extend_from_slice(&out);
            out = grown;
        }
        out.extend_from_slice(encoded.as_bytes());
        position += c.len_utf16() * 2;
    }
    Ok(out)
}

fn has_mark(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF])
}

fn units(bytes: &[u8], order: ByteOrder) -> impl Iterator<Item = u16> + '_ {
    let body = if has_mark(bytes) { &bytes[2..] } else { bytes };
    body.chunks_exact(2).map(move |pair| match order {
        ByteOrder::Little => u16::from_le_bytes([pair[0], pair[1]]),
        ByteOrder::Big => u16::from_be_bytes([pair[0], pair[1]]),
    })
}

fn invalid(at: usize, problem: &str) -> ExtractError {
    ExtractError {
        format: Format::X12,
        location: format!("byte {at}"),
        // The caller adds how to store it anyway (X-Vault-Extraction: opaque).
        problem: format!("{problem} (X12 is read as UTF-8 or UTF-16)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(text: &str, order: ByteOrder, mark: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let units = (if mark { Some('\u{FEFF}') } else { None })
            .into_iter()
            .chain(text.chars())
            .flat_map(|c| {
                let mut buffer = [0u16; 2];
                c.encode_utf16(&mut buffer).to_vec()
            });
        for unit in units {
            out.extend_from_slice(&match order {
                ByteOrder::Little => unit.to_le_bytes(),
                ByteOrder::Big => unit.to_be_bytes(),
            });
        }
        out
    }

    #[test]
    fn every_order_with_or_without_a_mark_reads_back_as_the_text() {
        let text = "ISA*00*          *00*~NM1*QC*1*MÜLLER*ZOË~\u{1F600}";
        for order in [ByteOrder::Little, ByteOrder::Big] {
            for mark in [true, false] {
                let bytes = encode(text, order, mark);
                assert_eq!(byte_order(&bytes), Some(order), "{order:?} {mark}");
                assert_eq!(head(&bytes, order, 3), "ISA");
                assert_eq!(to_utf8(&bytes, order).unwrap().as_slice(), text.as_bytes());
            }
        }
    }

    #[test]
    fn utf8_is_not_taken_for_utf16() {
        assert_eq!(byte_order(b"ISA*00*"), None);
        assert_eq!(byte_order(b"\xEF\xBB\xBFISA*00*"), None);
        assert_eq!(byte_order(b"{\"resourceType\":"), None);
        assert_eq!(byte_order(b""), None);
    }

    #[test]
    fn broken_utf16_is_refused_by_position() {
        let mut odd = encode("ISA*00", ByteOrder::Little, false);
        odd.push(b'*');
        assert_eq!(
            to_utf8(&odd, ByteOrder::Little).unwrap_err().location,
            "byte 12"
        );
        // A high surrogate followed by a letter.
        let mut lone = encode("ISA", ByteOrder::Big, true);
        lone.extend_from_slice(&[0xD8, 0x3D, 0x00, b'x']);
        assert_eq!(
            to_utf8(&lone, ByteOrder::Big).unwrap_err().location,
            "byte 8"
        );
    }
}
