//! `X-Hub-Signature-256: sha256=<hex>`: HMAC-SHA256 of the raw body bytes with the app secret,
//! compared in constant time.

use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Why a signature was rejected.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    #[error("malformed X-Hub-Signature-256 header (expected sha256=<64 hex digits>)")]
    Malformed,
    #[error("signature does not match the body")]
    Mismatch,
}

/// The header value for `body` signed with `secret` (used by herd's own tools and tests).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks `header` against `body` signed with `secret`.
pub fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_sig = header.trim().strip_prefix("sha256=").ok_or(SignatureError::Malformed)?;
    let sig = hex::decode(hex_sig).map_err(|_| SignatureError::Malformed)?;
    if sig.len() != 32 {
        return Err(SignatureError::Malformed);
    }
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&sig).map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_made_over_the_raw_bytes_verifies_and_any_change_fails() {
        let body = "{\"text\":\"héllo 😀\"}".as_bytes();
        let h = sign(b"secret", body);
        assert_eq!(verify(b"secret", body, Some(&h)), Ok(()));
        assert_eq!(verify(b"other", body, Some(&h)), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"secret", b"{}", Some(&h)), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"secret", body, None), Err(SignatureError::Missing));
        assert_eq!(verify(b"secret", body, Some("sha1=00")), Err(SignatureError::Malformed));
        assert_eq!(verify(b"secret", body, Some("sha256=zz")), Err(SignatureError::Malformed));
    }

    #[test]
    fn a_known_vector_matches() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog") (RFC 4231 style vector)
        let h = sign(b"key", b"The quick brown fox jumps over the lazy dog");
        assert_eq!(h, "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8");
    }
}
