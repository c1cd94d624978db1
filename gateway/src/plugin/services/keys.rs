//! `gateway:plugin/keys`: signature checks against the operator's key sets
//! (`key_sets:`). Granted as `plugins.grants.<plugin>.keys: [SET, ...]`;
//! only the sets listed can be used. The keys never enter the plugin.

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use super::{HostService, NotGranted, Resources};
use crate::keys::{KeySet, VerifyError};
use crate::plugin::bindings::gateway::plugin::keys;
use crate::plugin::host::HostState;

pub struct Keys;

/// The sets one plugin was granted, by name; `None` for a set whose config
/// failed to load (reported on its own: the grant itself is fine).
pub struct GrantedSets(Vec<(String, Option<Arc<KeySet>>)>);

impl HostService for Keys {
    const GRANT: &'static str = "keys";
    const INTERFACE: &'static str = "gateway:plugin/keys";
    type Grant = Vec<String>;
    type Shared = GrantedSets;

    fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        keys::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
    }

    fn configure(names: Vec<String>, resources: &Resources) -> Result<GrantedSets, String> {
        let mut sets = Vec::with_capacity(names.len());
        for name in names {
            // Its own error says why; one about the grant would mislead.
            if resources.broken_key_sets.contains(&name) {
                sets.push((name, None));
                continue;
            }
            let Some(set) = resources.key_sets.get(&name) else {
                let known: Vec<&str> = resources.key_sets.keys().map(String::as_str).collect();
                return Err(if known.is_empty() {
                    format!("no key set named \"{name}\"; define it under key_sets")
                } else {
                    format!(
                        "no key set named \"{name}\"; key_sets has: {}",
                        known.join(", ")
                    )
                });
            };
            sets.push((name, Some(set.clone())));
        }
        Ok(GrantedSets(sets))
    }
}

impl keys::Host for HostState {
    fn granted(&mut self, key_set: String) -> wasmtime::Result<bool> {
        let sets = super::shared::<Keys>(&self.granted).ok_or(NotGranted(Keys::INTERFACE))?;
        Ok(sets.0.iter().any(|(name, _)| *name == key_set))
    }

    fn verify_jwt(
        &mut self,
        key_set: String,
        token: String,
    ) -> wasmtime::Result<Result<keys::VerifiedToken, keys::VerifyError>> {
        let sets = super::shared::<Keys>(&self.granted).ok_or(NotGranted(Keys::INTERFACE))?;
        let Some((_, Some(set))) = sets.0.iter().find(|(name, _)| *name == key_set) else {
            return Ok(Err(keys::VerifyError::Unavailable(format!(
                "key set \"{}\" is not granted to this plugin",
                key_set.chars().take(64).collect::<String>()
            ))));
        };
        Ok(match set.verify(&token) {
            Ok(verified) => Ok(keys::VerifiedToken {
                header: verified.header,
                claims: verified.claims,
            }),
            Err(error) => Err(match error {
                VerifyError::Malformed(why) => keys::VerifyError::Malformed(why),
                VerifyError::AlgorithmNotAllowed(alg) => {
                    keys::VerifyError::AlgorithmNotAllowed(alg)
                }
                VerifyError::UnknownKey(kid) => keys::VerifyError::UnknownKey(kid),
                VerifyError::BadSignature => keys::VerifyError::BadSignature,
                VerifyError::Unavailable(why) => keys::VerifyError::Unavailable(why),
            }),
        })
    }
}
