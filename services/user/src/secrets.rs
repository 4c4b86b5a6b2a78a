//! Random secrets and RFC 6238 TOTP. Pure functions: time is an input.

use hmac::{Hmac, Mac};
use rand::RngCore as _;

/// The TOTP step (RFC 6238 default).
pub const TOTP_STEP_SECONDS: i64 = 30;
/// Steps tolerated either side of the current one (clock drift).
pub const TOTP_SKEW_STEPS: i64 = 1;

const BASE32_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const BASE62_ALPHABET: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0_u8; N];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

/// A refresh token: `amr_` + 43 base64url characters (256 bits).
pub fn new_refresh_token() -> String {
    use base64::Engine as _;
    format!(
        "amr_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
    )
}

/// An e-mail verification token: `amv_` + 43 base64url characters (256
/// bits). Only its SHA-256 is stored.
pub fn new_email_verification_token() -> String {
    use base64::Engine as _;
    format!(
        "amv_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
    )
}

/// Whether `token` has the shape of [`new_email_verification_token`]'s
/// tokens (checked before any database work).
pub fn is_email_verification_token(token: &str) -> bool {
    token.strip_prefix("amv_").is_some_and(|rest| {
        rest.len() == 43
            && rest
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_'))
    })
}

/// An API key secret: `amk_` + 40 base62 characters (about 238 bits).
pub fn new_api_key_secret() -> String {
    let mut secret = String::with_capacity(44);
    secret.push_str("amk_");
    while secret.len() < 44 {
        for byte in random_bytes::<32>() {
            // Rejection sampling keeps the characters uniform.
            if byte < 248 && secret.len() < 44 {
                secret.push(char::from(BASE62_ALPHABET[usize::from(byte % 62)]));
            }
        }
    }
    secret
}

/// A recovery code `xxxx-xxxx` (lowercase base32 characters, 40 bits).
pub fn new_recovery_code() -> String {
    let encoded = base32_encode(&random_bytes::<5>()).to_lowercase();
    format!("{}-{}", &encoded[..4], &encoded[4..8])
}

/// A new 160-bit TOTP secret, base32 without padding.
pub fn new_totp_secret() -> String {
    base32_encode(&random_bytes::<20>())
}

/// RFC 4648 base32 without padding.
pub fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(
                BASE32_ALPHABET[((buffer >> bits) & 31) as usize],
            ));
        }
    }
    if bits > 0 {
        out.push(char::from(
            BASE32_ALPHABET[((buffer << (5 - bits)) & 31) as usize],
        ));
    }
    out
}

/// RFC 4648 base32 (padding and case ignored).
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for character in text.trim_end_matches('=').bytes() {
        let value = BASE32_ALPHABET
            .iter()
            .position(|&symbol| symbol == character.to_ascii_uppercase())?;
        buffer = (buffer << 5) | u32::try_from(value).ok()?;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buffer >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

/// The HOTP value (RFC 4226, 6 digits) of `secret` at `counter`.
pub fn hotp(secret: &[u8], counter: u64) -> u32 {
    // HMAC accepts keys of any length.
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(secret) else {
        return u32::MAX;
    };
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let binary = (u32::from(digest[offset] & 0x7f) << 24)
        | (u32::from(digest[offset + 1]) << 16)
        | (u32::from(digest[offset + 2]) << 8)
        | u32::from(digest[offset + 3]);
    binary % 1_000_000
}

/// The TOTP step of a time.
pub fn totp_step(now_ms: i64) -> i64 {
    now_ms.div_euclid(1_000).div_euclid(TOTP_STEP_SECONDS)
}

/// The 6-digit code of `secret_base32` at `now_ms` (for tests and tools).
pub fn totp_code(secret_base32: &str, now_ms: i64) -> Option<String> {
    let secret = base32_decode(secret_base32)?;
    let step = u64::try_from(totp_step(now_ms)).ok()?;
    Some(format!("{:06}", hotp(&secret, step)))
}

/// The step at which `code` is valid for `secret_base32` within the
/// tolerated skew around `now_ms`, if any. Whether that step was already
/// used is the caller's check (a code is accepted only once).
pub fn matching_totp_step(secret_base32: &str, code: &str, now_ms: i64) -> Option<i64> {
    if code.len() != 6 || !code.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let secret = base32_decode(secret_base32)?;
    let wanted: u32 = code.parse().ok()?;
    let current = totp_step(now_ms);
    (current - TOTP_SKEW_STEPS..=current + TOTP_SKEW_STEPS)
        .find(|&step| u64::try_from(step).is_ok_and(|counter| hotp(&secret, counter) == wanted))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    // Proves the TOTP implementation matches RFC 6238's SHA-1 test vectors.
    #[test]
    fn rfc6238_vectors() {
        let secret = base32_encode(b"12345678901234567890");
        for (seconds, expected) in [
            (59_i64, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(totp_code(&secret, seconds * 1_000).unwrap(), expected);
        }
    }

    // Proves codes one step away are tolerated and two steps away are not.
    #[test]
    fn skew_is_one_step() {
        let secret = new_totp_secret();
        let now_ms = 1_800_000_000_000;
        let previous = totp_code(&secret, now_ms - 30_000).unwrap();
        assert_eq!(
            matching_totp_step(&secret, &previous, now_ms),
            Some(totp_step(now_ms) - 1)
        );
        let old = totp_code(&secret, now_ms - 60_000).unwrap();
        if old != previous && old != totp_code(&secret, now_ms).unwrap() {
            assert_eq!(matching_totp_step(&secret, &old, now_ms), None);
        }
        assert_eq!(matching_totp_step(&secret, "12345", now_ms), None);
    }

    // Proves base32 round-trips and secrets have the promised shapes.
    #[test]
    fn shapes() {
        let bytes = random_bytes::<20>();
        assert_eq!(base32_decode(&base32_encode(&bytes)).unwrap(), bytes);
        assert_eq!(new_totp_secret().len(), 32);
        let key = new_api_key_secret();
        assert_eq!(key.len(), 44);
        assert!(key.starts_with("amk_"));
        let code = new_recovery_code();
        assert_eq!(code.len(), 9);
        assert_eq!(&code[4..5], "-");
    }

    // Proves verification tokens have the documented shape, differ each
    // time, and that the shape check refuses near misses.
    #[test]
    fn email_verification_token_shape() {
        let token = new_email_verification_token();
        assert!(is_email_verification_token(&token), "{token}");
        assert_ne!(token, new_email_verification_token());
        assert!(!is_email_verification_token(""));
        assert!(!is_email_verification_token(&token[..token.len() - 1]));
        assert!(!is_email_verification_token(
            &token.replacen("amv_", "amr_", 1)
        ));
        assert!(!is_email_verification_token(&format!(
            "{}=",
            &token[..token.len() - 1]
        )));
    }
}
