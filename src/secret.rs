//! Secret value types: raw card and bank data, passphrases and key bytes.
//!
//! Each is a distinct newtype over `secrecy`'s zeroizing box. None implements
//! `Display`, `Serialize` or `Clone`; `Debug` prints `[REDACTED]`. Reading the value
//! is always `expose_secret()`, so `grep expose_secret` lists every use.

use secrecy::{ExposeSecret, SecretBox, SecretString};
use zeroize::Zeroizing;

macro_rules! secret_text {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name(SecretString);

        impl $name {
            /// Takes ownership of an already exact-sized string; it is wiped on drop.
            pub fn new(value: Box<str>) -> Self {
                $name(SecretString::new(value))
            }

            /// Copies `value` into a new exact-sized secret allocation.
            pub fn copy_from(value: &str) -> Self {
                Self::new(Box::from(value))
            }

            pub fn expose_secret(&self) -> &str {
                self.0.expose_secret()
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "([REDACTED])"))
            }
        }
    };
}

secret_text!(
    /// A primary account number, digits only once validated.
    Pan
);
secret_text!(
    /// A card verification code. Never written to disk.
    Cvc
);
secret_text!(
    /// An IBAN, upper case without spaces once validated.
    Iban
);
secret_text!(
    /// A US ACH account number.
    AccountNumber
);
secret_text!(
    /// Personal data that travels with a credential: holder name, billing address.
    Personal
);
secret_text!(
    /// The passphrase that unseals the keyring.
    Passphrase
);

/// 32 bytes of key material (a data key, a key-encryption key, a MAC key).
/// Wiped on drop; never printed.
pub struct KeyBytes(SecretBox<[u8; 32]>);

impl KeyBytes {
    pub fn new(bytes: [u8; 32]) -> Self {
        let mut bytes = Zeroizing::new(bytes);
        KeyBytes(SecretBox::new(Box::new(std::mem::take(&mut *bytes))))
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let array: [u8; 32] = bytes.try_into().ok()?;
        Some(KeyBytes::new(array))
    }

    pub fn expose_secret(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyBytes([REDACTED])")
    }
}

/// Raw secret text as it arrives in a request, before validation. Deserialises from
/// a JSON string only; a wrong type is reported without the value, and the text is
/// copied once into an exact-sized allocation.
pub struct SecretInput(SecretString);

impl SecretInput {
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for SecretInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretInput([REDACTED])")
    }
}

impl<'de> serde::Deserialize<'de> for SecretInput {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = SecretInput;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SecretInput, E> {
                Ok(SecretInput(SecretString::new(Box::from(v))))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let pan = Pan::copy_from("4111111111111111");
        let key = KeyBytes::new([7u8; 32]);
        let shown = format!("{pan:?} {key:?} {:?}", Cvc::copy_from("123"));
        assert!(!shown.contains("4111"));
        assert!(!shown.contains("123"));
        assert!(!shown.contains('7'));
        assert_eq!(pan.expose_secret(), "4111111111111111");
    }
}
