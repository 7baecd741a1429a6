//! Where plaintext bytes live in the ciphertext.
//!
//! Every full segment holds `segment_size` plaintext bytes; the final segment holds
//! fewer (possibly zero). So a body of `P` bytes has `P / S + 1` segments, and the
//! plaintext length follows from the ciphertext length alone; a dropped final segment
//! leaves a full segment last, which the decryptor rejects as truncation.

use super::TAG_LEN;
use crate::CryptoError;

/// Geometry of one body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLayout {
    /// Encoded header length.
    pub header_len: u64,
    /// Plaintext bytes per full segment.
    pub segment_size: u64,
}

/// The ciphertext bytes to fetch for a plaintext range, and how to trim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangePlan {
    /// First segment index to decrypt.
    pub first_segment: u64,
    /// Last segment index to decrypt (inclusive).
    pub last_segment: u64,
    /// Whether `last_segment` is the body's final segment.
    pub includes_final: bool,
    /// Ciphertext byte range to read (start inclusive, end exclusive).
    pub ciphertext: std::ops::Range<u64>,
    /// Plaintext bytes to drop from the first decrypted segment.
    pub skip: u64,
    /// Plaintext bytes to return.
    pub len: u64,
}

impl BodyLayout {
    fn full_segment_ct(&self) -> u64 {
        self.segment_size + TAG_LEN as u64
    }

    /// Total ciphertext length of a body of `plaintext_len` bytes.
    pub fn ciphertext_len(&self, plaintext_len: u64) -> u64 {
        let full = plaintext_len / self.segment_size;
        let rest = plaintext_len % self.segment_size;
        self.header_len + full * self.full_segment_ct() + rest + TAG_LEN as u64
    }

    /// Plaintext length of a body whose ciphertext is `ciphertext_len` bytes.
    pub fn plaintext_len(&self, ciphertext_len: u64) -> Result<u64, CryptoError> {
        let body = ciphertext_len
            .checked_sub(self.header_len)
            .ok_or(CryptoError::Truncated)?;
        let full = body / self.full_segment_ct();
        let rest = body % self.full_segment_ct();
        if rest < TAG_LEN as u64 {
            return Err(CryptoError::Truncated);
        }
        Ok(full * self.segment_size + rest - TAG_LEN as u64)
    }

    /// Number of segments of a body of `plaintext_len` bytes.
    pub fn segment_count(&self, plaintext_len: u64) -> u64 {
        plaintext_len / self.segment_size + 1
    }

    /// The segments covering plaintext `start..end` of a body of `plaintext_len`
    /// bytes. `end` is clamped to the body; an empty or out-of-range request is an
    /// error.
    pub fn plan_range(
        &self,
        plaintext_len: u64,
        start: u64,
        end: u64,
    ) -> Result<RangePlan, CryptoError> {
        let end = end.min(plaintext_len);
        if start >= end {
            return Err(CryptoError::InvalidArgument {
                what: "range",
                reason: format!(
                    "{start}..{end} is empty or outside a body of {plaintext_len} bytes"
                ),
            });
        }
        let first_segment = start / self.segment_size;
        let last_segment = (end - 1) / self.segment_size;
        let final_segment = self.segment_count(plaintext_len) - 1;
        let ct_start = self.header_len + first_segment * self.full_segment_ct();
        let ct_end = if last_segment == final_segment {
            self.ciphertext_len(plaintext_len)
        } else {
            self.header_len + (last_segment + 1) * self.full_segment_ct()
        };
        Ok(RangePlan {
            first_segment,
            last_segment,
            includes_final: last_segment == final_segment,
            ciphertext: ct_start..ct_end,
            skip: start - first_segment * self.segment_size,
            len: end - start,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn lengths_invert(segment in 16u64..5000, plain in 0u64..1_000_000, header in 100u64..200) {
            let layout = BodyLayout { header_len: header, segment_size: segment };
            let ct = layout.ciphertext_len(plain);
            prop_assert_eq!(layout.plaintext_len(ct).unwrap(), plain);
        }

        #[test]
        fn range_plans_cover_the_request(segment in 16u64..500, plain in 1u64..20_000, a in 0u64..20_000, b in 0u64..20_000) {
            let layout = BodyLayout { header_len: 120, segment_size: segment };
            let (start, end) = (a.min(b) % plain, a.max(b).min(plain));
            prop_assume!(start < end);
            let plan = layout.plan_range(plain, start, end).unwrap();
            prop_assert!(plan.first_segment * segment <= start);
            prop_assert!(plan.last_segment * segment + segment >= end);
            prop_assert_eq!(plan.len, end - start);
            prop_assert!(plan.ciphertext.end <= layout.ciphertext_len(plain));
        }
    }
}
