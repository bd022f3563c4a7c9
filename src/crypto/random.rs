//! Random bytes from the operating system's CSPRNG.

use super::CryptoError;

/// Fills `buf` from the OS CSPRNG (getrandom). Callers draw everything one operation
/// needs in one call: each call is a system call.
pub fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::getrandom(buf).map_err(|_| CryptoError::Random)
}
