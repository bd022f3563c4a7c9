//! Raw credentials as a detokenize reveals them, rebuilt from a decrypted payload.

use super::credential::{tag, Address};
use super::credential::{TYPE_ACH, TYPE_CARD, TYPE_IBAN};
use super::input::AccountType;
use super::record::{decode_payload, MalformedRecord, Metadata};
use super::VaultError;
use crate::secret::{AccountNumber, Cvc, Iban, Pan, Personal};

pub enum Revealed {
    Card {
        number: Pan,
        exp_month: u8,
        exp_year: u16,
        holder_name: Option<Personal>,
        cvc: Option<Cvc>,
        billing_address: Option<Address>,
    },
    Iban {
        iban: Iban,
        bic: Option<String>,
        holder_name: Option<Personal>,
    },
    Ach {
        routing_number: String,
        account_number: AccountNumber,
        account_type: Option<AccountType>,
        holder_name: Option<Personal>,
    },
}

/// A detokenized record: the public envelope and the raw values.
pub struct Detokenized {
    pub meta: Metadata,
    pub revealed: Revealed,
}

fn text(value: &[u8]) -> Result<&str, VaultError> {
    std::str::from_utf8(value).map_err(|_| VaultError::Corrupt)
}

impl Revealed {
    pub fn from_payload(
        record_type: u8,
        plain: &[u8],
        meta: &Metadata,
        cvc: Option<Cvc>,
    ) -> Result<Revealed, VaultError> {
        let fields = decode_payload(plain).map_err(|MalformedRecord| VaultError::Corrupt)?;
        let find = |t: u8| fields.iter().find(|(tag, _)| *tag == t).map(|(_, v)| *v);
        let personal = |t: u8| -> Result<Option<Personal>, VaultError> {
            find(t).map(|v| text(v).map(Personal::copy_from)).transpose()
        };
        let holder_name = personal(tag::HOLDER)?;
        match record_type {
            TYPE_CARD => {
                let card = meta.card.as_ref().ok_or(VaultError::Corrupt)?;
                let number = Pan::copy_from(text(find(tag::NUMBER).ok_or(VaultError::Corrupt)?)?);
                let address = Address {
                    line1: personal(tag::LINE1)?,
                    line2: personal(tag::LINE2)?,
                    city: personal(tag::CITY)?,
                    state: personal(tag::STATE)?,
                    postal_code: personal(tag::POSTAL)?,
                    country: personal(tag::COUNTRY)?,
                };
                Ok(Revealed::Card {
                    number,
                    exp_month: card.exp_month,
                    exp_year: card.exp_year,
                    holder_name,
                    cvc,
                    billing_address: (!address.is_empty()).then_some(address),
                })
            }
            TYPE_IBAN => Ok(Revealed::Iban {
                iban: Iban::copy_from(text(find(tag::IBAN).ok_or(VaultError::Corrupt)?)?),
                bic: find(tag::BIC).map(text).transpose()?.map(str::to_owned),
                holder_name,
            }),
            TYPE_ACH => {
                let bank = meta.bank_account.as_ref().ok_or(VaultError::Corrupt)?;
                Ok(Revealed::Ach {
                    routing_number: bank.routing_number.clone().ok_or(VaultError::Corrupt)?,
                    account_number: AccountNumber::copy_from(text(find(tag::ACCOUNT).ok_or(VaultError::Corrupt)?)?),
                    account_type: bank.account_type,
                    holder_name,
                })
            }
            _ => Err(VaultError::Corrupt),
        }
    }
}
