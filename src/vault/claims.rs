//! A one-time migration: numeric tokens issued before claims existed get the
//! claim that makes a number unique across tenants (`numeric_claim_key`). Run at
//! start, before the listener opens; a flag in the meta table records that it is
//! done, so later starts read one key.

use super::record::numeric_claim_key;
use super::{Vault, VaultError};
use crate::commit::{Change, Expect};
use crate::store::{Table, WriteOp};

/// Set once every numeric record has its claim.
const DONE: &[u8] = b"migration/numeric-claims";
/// Records read per committed batch.
const PAGE: usize = 1000;

/// What the migration did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ClaimBackfill {
    pub claimed: u64,
    /// Numbers held in more than one tenant: the first tenant (in key order)
    /// keeps the claim; the others answer a client of both with 409.
    pub shared: u64,
}

impl Vault {
    /// Writes the missing claims of numeric records, in batches; nothing when the
    /// migration ran before.
    pub async fn backfill_numeric_claims(&self) -> Result<Option<ClaimBackfill>, VaultError> {
        if self.store.get(Table::Meta, DONE)?.is_some() {
            return Ok(None);
        }
        let mut report = ClaimBackfill::default();
        // Numeric records are keyed `#tenant\0token`; opaque ones start with `tok_`.
        let mut from = b"#".to_vec();
        loop {
            let page = self.store.scan_from(Table::Records, &from, PAGE)?;
            let mut change = Change::default();
            let mut claims_seen = std::collections::HashSet::new();
            let numeric: Vec<&Vec<u8>> = page
                .iter()
                .map(|(key, _)| key)
                .take_while(|key| key.first() == Some(&b'#'))
                .collect();
            for key in &numeric {
                let Some((tenant, token)) = split_numeric_key(key) else {
                    continue;
                };
                let Some(claim) = numeric_claim_key(token) else {
                    continue;
                };
                let holder = self.store.get(Table::Fingerprints, &claim)?;
                match holder {
                    Some(owner) if owner == tenant.as_bytes() => {}
                    Some(_) => report.shared += 1,
                    None if !claims_seen.insert(claim.clone()) => report.shared += 1,
                    None => {
                        change.ops.push(WriteOp::put(
                            Table::Fingerprints,
                            claim.clone(),
                            tenant.as_bytes().to_vec(),
                        ));
                        change.expect.push(Expect::absent(Table::Fingerprints, claim));
                        report.claimed += 1;
                    }
                }
            }
            let last = numeric.len() < page.len() || page.len() < PAGE;
            if last {
                change.ops.push(WriteOp::put(Table::Meta, DONE.to_vec(), b"1".to_vec()));
            }
            if !change.ops.is_empty() {
                self.committer.commit(change).await?;
            }
            match numeric.last() {
                Some(key) if !last => {
                    from = (*key).clone();
                    from.push(0);
                }
                _ => return Ok(Some(report)),
            }
        }
    }
}

/// `#tenant\0token` → (tenant, token).
fn split_numeric_key(key: &[u8]) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(b"#")?;
    let nul = rest.iter().position(|b| *b == 0)?;
    let tenant = std::str::from_utf8(rest.get(..nul)?).ok()?;
    let token = std::str::from_utf8(rest.get(nul + 1..)?).ok()?;
    Some((tenant, token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::store::MemoryStore;
    use crate::store::Store;
    use std::sync::Arc;

    /// Records written before claims existed: 2,500 numeric ones in two tenants
    /// (one number in both), and opaque ones, which need no claim.
    #[tokio::test]
    async fn legacy_numeric_records_get_their_claims_once() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let mut ops = Vec::new();
        for i in 0..1250u32 {
            for tenant in ["eu", "us"] {
                let token = if tenant == "us" && i == 7 {
                    5_018_000_000_007
                } else {
                    5_018_000_000_000 + u64::from(i) * 10 + u64::from(tenant == "us")
                };
                let key = format!("#{tenant}\0{token}").into_bytes();
                ops.push(WriteOp::put(Table::Records, key, b"record".to_vec()));
            }
            ops.push(WriteOp::put(
                Table::Records,
                format!("tok_{i:024}").into_bytes(),
                b"record".to_vec(),
            ));
        }
        // "us" also holds eu's number 5018000000070 (i = 7): a legacy collision.
        ops.push(WriteOp::put(
            Table::Records,
            b"#us\x005018000000070".to_vec(),
            b"record".to_vec(),
        ));
        assert!(store.write(&ops, true).is_ok());
        let Some(vault) = super::super::tests::vault_on(store.clone(), Arc::new(SystemClock)) else {
            panic!("vault");
        };
        let report = vault.backfill_numeric_claims().await.ok().flatten();
        assert_eq!(
            report,
            Some(ClaimBackfill {
                claimed: 2500,
                shared: 1
            })
        );
        let owner = |token: &str| {
            numeric_claim_key(token).and_then(|claim| store.get(Table::Fingerprints, &claim).ok().flatten())
        };
        assert_eq!(owner("5018000000070"), Some(b"eu".to_vec()));
        assert_eq!(owner("5018000012491"), Some(b"us".to_vec()));
        assert_eq!(owner("tok_000000000000000000000001"), None);
        // Done once: a second start reads the flag and writes nothing.
        assert_eq!(vault.backfill_numeric_claims().await.ok().flatten(), None);
    }

    #[test]
    fn numeric_keys_split_into_tenant_and_token() {
        assert_eq!(
            split_numeric_key(b"#eu\x005018001230009"),
            Some(("eu", "5018001230009"))
        );
        assert_eq!(split_numeric_key(b"tok_abc"), None);
        assert_eq!(split_numeric_key(b"#no-separator"), None);
    }
}
