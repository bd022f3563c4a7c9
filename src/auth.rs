//! Authorization: which identity may do what, in which tenants.
//!
//! The only way to obtain an `Authorized<P>` is `authorize`, and the vault's
//! operations take one, so an unchecked call does not compile. The proof carries the
//! identity (for the audit trail) and the tenants the operation may touch.

use std::collections::{BTreeSet, HashMap};
use std::marker::PhantomData;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Tokenize,
    Detokenize,
    Keys,
    Audit,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Tokenize => "tokenize",
            Role::Detokenize => "detokenize",
            Role::Keys => "keys",
            Role::Audit => "audit",
        }
    }
}

/// One `[[clients]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub identity: String,
    pub roles: BTreeSet<Role>,
    pub tenants: Vec<String>,
}

/// The configured clients, by identity.
#[derive(Debug, Clone, Default)]
pub struct ClientTable(HashMap<String, Client>);

impl ClientTable {
    pub fn new(clients: Vec<Client>) -> Self {
        ClientTable(clients.into_iter().map(|c| (c.identity.clone(), c)).collect())
    }

    pub fn find(&self, identity: &str) -> Option<&Client> {
        self.0.get(identity)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the client certificate's identity is not configured")]
    UnknownIdentity,
    #[error("the identity does not have a role that allows this operation")]
    RoleNotAllowed,
    #[error("the identity may not act in this tenant")]
    TenantNotAllowed,
    #[error("tenant is required: the identity acts in more than one tenant")]
    TenantRequired,
}

/// A permission: the roles that grant it.
pub trait Permission {
    const NAME: &'static str;
    fn granted_by(role: Role) -> bool;
}

macro_rules! permission {
    ($name:ident, $label:literal, $($role:ident)|+) => {
        #[derive(Debug, Clone, Copy)]
        pub struct $name;
        impl Permission for $name {
            const NAME: &'static str = $label;
            fn granted_by(role: Role) -> bool {
                matches!(role, $(Role::$role)|+)
            }
        }
    };
}

permission!(Tokenize, "tokenize", Tokenize);
permission!(Detokenize, "detokenize", Detokenize);
permission!(ReadMetadata, "read_metadata", Tokenize | Detokenize);
permission!(Delete, "delete", Tokenize);
permission!(Update, "update", Tokenize);
permission!(ReadWallet, "read_wallet", Tokenize);
permission!(ManageKeys, "manage_keys", Keys);
permission!(ReadKeys, "read_keys", Keys | Audit);
permission!(ReadAudit, "read_audit", Audit);

/// Proof that `identity` may perform `P` in `tenants`.
#[derive(Debug, Clone)]
pub struct Authorized<P> {
    identity: String,
    tenants: Vec<String>,
    _permission: PhantomData<P>,
}

impl<P> Authorized<P> {
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The tenants the operation may touch. For a tokenize, exactly one.
    pub fn tenants(&self) -> &[String] {
        &self.tenants
    }
}

impl Authorized<Tokenize> {
    /// The single tenant a new record goes into.
    pub fn tenant(&self) -> &str {
        self.tenants.first().map(String::as_str).unwrap_or_default()
    }
}

/// Checks that `client` holds a role granting `P`. With `tenant` named, the proof
/// covers that tenant only (and it must be one of the client's); without, it covers
/// all of the client's tenants.
pub fn authorize<P: Permission>(client: &Client, tenant: Option<&str>) -> Result<Authorized<P>, AuthError> {
    if !client.roles.iter().any(|r| P::granted_by(*r)) {
        return Err(AuthError::RoleNotAllowed);
    }
    let tenants = match tenant {
        Some(t) if client.tenants.iter().any(|c| c == t) => vec![t.to_owned()],
        Some(_) => return Err(AuthError::TenantNotAllowed),
        None => client.tenants.clone(),
    };
    Ok(Authorized {
        identity: client.identity.clone(),
        tenants,
        _permission: PhantomData,
    })
}

/// Like `authorize`, for an operation that writes into exactly one tenant: the named
/// one, or the client's only tenant.
pub fn authorize_single<P: Permission>(client: &Client, tenant: Option<&str>) -> Result<Authorized<P>, AuthError> {
    let proof = authorize::<P>(client, tenant)?;
    if proof.tenants.len() != 1 {
        return Err(AuthError::TenantRequired);
    }
    Ok(proof)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(roles: &[Role], tenants: &[&str]) -> Client {
        Client {
            identity: "c".into(),
            roles: roles.iter().copied().collect(),
            tenants: tenants.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn roles_grant_only_their_permissions() {
        let checkout = client(&[Role::Tokenize], &["t"]);
        let gateway = client(&[Role::Detokenize], &["t"]);
        assert!(authorize::<Tokenize>(&checkout, None).is_ok());
        assert_eq!(
            authorize::<Detokenize>(&checkout, None).err(),
            Some(AuthError::RoleNotAllowed)
        );
        assert_eq!(
            authorize::<Tokenize>(&gateway, None).err(),
            Some(AuthError::RoleNotAllowed)
        );
        assert!(authorize::<ReadMetadata>(&gateway, None).is_ok());
        assert_eq!(
            authorize::<Delete>(&gateway, None).err(),
            Some(AuthError::RoleNotAllowed)
        );
    }

    #[test]
    fn tenants_are_checked_and_resolved() {
        let two = client(&[Role::Tokenize], &["a", "b"]);
        assert_eq!(
            authorize_single::<Tokenize>(&two, None).err(),
            Some(AuthError::TenantRequired)
        );
        assert_eq!(
            authorize_single::<Tokenize>(&two, Some("c")).err(),
            Some(AuthError::TenantNotAllowed)
        );
        let proof = authorize_single::<Tokenize>(&two, Some("b"));
        assert_eq!(proof.map(|p| p.tenant().to_owned()).ok().as_deref(), Some("b"));
        let one = client(&[Role::Tokenize], &["a"]);
        let proof = authorize_single::<Tokenize>(&one, None);
        assert_eq!(proof.map(|p| p.tenant().to_owned()).ok().as_deref(), Some("a"));
    }
}
