//! The providers placement can choose from: this node's own (internal and
//! external), what it advertises of them, and the ranking index over them
//! and the ones other nodes advertise, rebuilt only when something changed.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tracing::{info, warn};

use super::call::journal::Journals;
use super::call::proxy::RemoteProvider;
use super::call::ProviderCaller;
use super::rank::Index;
use crate::proto::peer::ProviderInfo;
use crate::resource::wire::provider_info;
use crate::resource::{labels, Candidate, Provider, ProviderDescriptor, ResourceError, Tier};
use crate::sync::lock;

/// What placement needs from the mesh.
pub trait Discovery: Send + Sync + 'static {
    /// Providers that other live nodes advertise.
    fn discovered(&self) -> Vec<Candidate>;
    /// Advertises this node's providers to the mesh.
    fn publish(&self, providers: Vec<ProviderInfo>);
    /// Reaches other nodes' `CallProvider`.
    fn caller(&self) -> Arc<dyn ProviderCaller>;
    /// Changes whenever `discovered` may answer differently (the view hash).
    fn version(&self) -> u64;
    /// Where the feed of changed owners stands now; None when this mesh
    /// keeps none (then every change rebuilds the index from `discovered`).
    fn feed_position(&self) -> Option<u64> {
        None
    }
    /// The owners whose advertised providers may have changed after feed
    /// position `after`, and the position now; None when that is no longer
    /// known (the feed moved on), and the index is rebuilt.
    fn changed_owners(&self, _after: u64) -> Option<(u64, Vec<String>)> {
        None
    }
    /// What `owner` advertises now, as `discovered` lists it.
    fn discovered_from(&self, owner: &str) -> Vec<Candidate> {
        let mut found = self.discovered();
        found.retain(|c| c.owner_id == owner);
        found
    }
    /// Changes whenever `decorate` may label a candidate differently for a
    /// reason `version` does not see (pools defined on this node).
    fn decorations_version(&self) -> u64 {
        0
    }
    /// Live members, this node included: the directory's ring. None known
    /// (a node alone, a test) leaves the directory idle.
    fn members(&self) -> Vec<super::directory::Member> {
        Vec::new()
    }
    /// Reaches other nodes' `Directory` service, when there is a mesh.
    fn directory(&self) -> Option<Arc<dyn super::directory::DirectoryCaller>> {
        None
    }
    /// Reaches other nodes' `ImageBuild` service, when there is a mesh.
    fn builds(&self) -> Option<Arc<dyn super::call::build::BuildCaller>> {
        None
    }
    /// Puts what the mesh knows of this node's providers on their
    /// candidates (swarm groups, models, pools), as `discovered` does for
    /// other nodes'.
    fn decorate(&self, _candidates: &mut [Candidate]) {}
}

/// What `p` says of itself, with the labels only iarnet can know.
pub(crate) async fn describe(p: &dyn Provider) -> Result<ProviderDescriptor, ResourceError> {
    let mut d = p.describe().await?;
    if p.image_builder().is_some() {
        d.labels.insert(labels::BUILDS.into(), "true".into());
    }
    Ok(d)
}

/// One of this node's providers and what it last said of itself.
struct Local {
    provider: Arc<dyn Provider>,
    tier: Tier,
    desc: ProviderDescriptor,
}

/// An index, the (discovery, local, decorations) versions it was made at,
/// and the discovery feed's position then.
struct CachedIndex {
    versions: (u64, u64, u64),
    feed: Option<u64>,
    index: Arc<Index>,
}

pub struct Registry {
    node_id: String,
    discovery: Arc<dyn Discovery>,
    allow_remote_access: bool,
    locals: RwLock<BTreeMap<String, Local>>,
    /// What was last advertised, so an unchanged set is not re-published.
    published: Mutex<Option<Vec<ProviderInfo>>>,
    /// Bumped on every change to a local provider's descriptor.
    local_version: AtomicU64,
    index: Mutex<Option<CachedIndex>>,
    /// What deploys served for other nodes report, for them to poll.
    journals: Journals,
}

impl Registry {
    pub fn new(node_id: &str, discovery: Arc<dyn Discovery>, allow_remote_access: bool) -> Self {
        Registry {
            node_id: node_id.to_string(),
            discovery,
            allow_remote_access,
            locals: RwLock::default(),
            // A node starts advertising nothing.
            published: Mutex::new(Some(Vec::new())),
            local_version: AtomicU64::new(0),
            index: Mutex::default(),
            journals: Journals::default(),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn journals(&self) -> &Journals {
        &self.journals
    }

    pub fn allow_remote_access(&self) -> bool {
        self.allow_remote_access
    }

    /// The mesh, as placement sees it.
    pub fn discovery(&self) -> &Arc<dyn Discovery> {
        &self.discovery
    }

    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, Local>> {
        self.locals.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Local>> {
        self.locals.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds one of this node's providers and advertises it.
    pub async fn add(
        &self,
        provider: Arc<dyn Provider>,
        tier: Tier,
    ) -> Result<ProviderDescriptor, ResourceError> {
        let desc = describe(&*provider).await?;
        {
            let mut locals = self.write();
            if locals.contains_key(&desc.id) {
                return Err(ResourceError::invalid(
                    "name",
                    format!(
                        "a provider with id {:?} is already registered on this node",
                        desc.id
                    ),
                ));
            }
            locals.insert(
                desc.id.clone(),
                Local {
                    provider,
                    tier,
                    desc: desc.clone(),
                },
            );
        }
        self.bump();
        info!(provider = %desc.id, kind = desc.kind.as_str(), tier = tier.as_str(), capacity = %desc.capacity.total, "provider added");
        self.publish();
        Ok(desc)
    }

    /// Removes an external provider; internal ones stay.
    pub fn remove(&self, id: &str) -> Result<(), ResourceError> {
        {
            let mut locals = self.write();
            match locals.get(id).map(|l| l.tier) {
                None => {
                    return Err(ResourceError::NotFound(format!(
                        "provider {id:?} is not registered on node {}; see ListProviders",
                        self.node_id
                    )))
                }
                Some(Tier::Internal) => {
                    return Err(ResourceError::invalid(
                        "id",
                        format!("{id:?} is this node's internal provider; only external providers can be unregistered"),
                    ))
                }
                Some(_) => {
                    locals.remove(id);
                }
            }
        }
        self.bump();
        info!(provider = %id, "provider removed");
        self.publish();
        Ok(())
    }

    /// One of this node's providers, by id.
    pub fn local(&self, id: &str) -> Option<(Arc<dyn Provider>, Tier)> {
        self.read().get(id).map(|l| (l.provider.clone(), l.tier))
    }

    /// This node's providers.
    pub fn providers(&self) -> Vec<Arc<dyn Provider>> {
        self.read().values().map(|l| l.provider.clone()).collect()
    }

    /// This node's providers, each with the candidate ranking would see.
    pub fn local_candidates(&self) -> Vec<(Arc<dyn Provider>, Candidate)> {
        self.read()
            .values()
            .map(|l| {
                (
                    l.provider.clone(),
                    Candidate::local(&l.desc, l.tier, &self.node_id),
                )
            })
            .collect()
    }

    /// Re-reads every local provider's capacity and health; advertises changes.
    pub async fn refresh(&self) {
        for p in self.providers() {
            // An unhealthy one is marked so; the loop goes on.
            let _ = self.refresh_one(&*p).await;
        }
        self.publish();
    }

    /// After a local provider admitted or released something: its new
    /// capacity reaches the index and the mesh at once.
    pub async fn changed(&self, p: &dyn Provider) {
        let _ = self.refresh_one(p).await;
        self.publish();
    }

    /// Tests one local provider again now (an operator's "refresh"):
    /// None when this node has no such provider, else why it is unhealthy.
    pub async fn retest(&self, id: &str) -> Option<Result<(), String>> {
        let p = self.providers().into_iter().find(|p| p.id() == id)?;
        let r = self.refresh_one(&*p).await;
        self.publish();
        Some(r)
    }

    async fn refresh_one(&self, p: &dyn Provider) -> Result<(), String> {
        let desc = describe(p).await;
        let mut locals = self.write();
        let Some(l) = locals.get_mut(p.id()) else {
            return Ok(());
        };
        match desc {
            Ok(d) if d == l.desc => Ok(()),
            Ok(d) => {
                l.desc = d;
                self.bump();
                Ok(())
            }
            Err(e) => {
                if l.desc.healthy {
                    warn!(provider = %p.id(), error = %e, "provider is unhealthy");
                    self.bump();
                }
                l.desc.healthy = false;
                Err(e.to_string())
            }
        }
    }

    fn bump(&self) {
        self.local_version.fetch_add(1, Ordering::Relaxed);
    }

    /// Advertises the local providers, unless remote access is off (then
    /// nothing is offered to other nodes) or nothing changed.
    fn publish(&self) {
        let infos: Vec<ProviderInfo> = if self.allow_remote_access {
            self.read()
                .values()
                .map(|l| provider_info(&l.desc))
                .collect()
        } else {
            Vec::new()
        };
        let mut last = lock(&self.published);
        if last.as_ref() != Some(&infos) {
            *last = Some(infos.clone());
            self.discovery.publish(infos);
        }
    }

    /// The ranking index over `candidates()`. Unchanged, it is the cached
    /// one. When other nodes' providers changed and the mesh says whose, or
    /// this node's own changed, just those are replaced (O(changed · log n));
    /// anything else rebuilds it.
    pub fn index(&self) -> Arc<Index> {
        let versions = (
            self.discovery.version(),
            self.local_version.load(Ordering::Relaxed),
            self.discovery.decorations_version(),
        );
        let mut cached = lock(&self.index);
        if let Some(c) = cached.as_ref().filter(|c| c.versions == versions) {
            return c.index.clone();
        }
        let (index, feed) = cached
            .as_ref()
            .and_then(|c| self.brought_up(c, versions))
            .unwrap_or_else(|| {
                // The position first: a change after it is applied again next time.
                let feed = self.discovery.feed_position();
                (Index::build(self.candidates()), feed)
            });
        let index = Arc::new(index);
        *cached = Some(CachedIndex {
            versions,
            feed,
            index: index.clone(),
        });
        index
    }

    /// `c` brought up to `versions` by its changes alone, with the feed's
    /// position after them; None where only a rebuild will do.
    fn brought_up(
        &self,
        c: &CachedIndex,
        versions: (u64, u64, u64),
    ) -> Option<(Index, Option<u64>)> {
        if c.versions.2 != versions.2 {
            return None;
        }
        let (mut index, mut feed) = ((*c.index).clone(), c.feed);
        // This node's own entry in the view carries what decorates its own
        // providers (swarm groups, models): a change there is theirs too.
        let mut locals_changed = c.versions.1 != versions.1;
        if c.versions.0 != versions.0 {
            let (at, owners) = self.discovery.changed_owners(c.feed?)?;
            locals_changed |= owners.contains(&self.node_id);
            index = self.with_owners_again(&index, owners);
            feed = Some(at);
        }
        if locals_changed {
            index = self.with_locals_again(&index)?;
        }
        Some((index, feed))
    }

    /// `index` with this node's own providers read again; None when one was
    /// added or removed (then a discovered one may be shadowed or uncovered).
    fn with_locals_again(&self, index: &Index) -> Option<Index> {
        let mut fresh: Vec<Candidate> = self
            .local_candidates()
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        self.discovery.decorate(&mut fresh);
        let held: HashSet<&str> = index.owned_by(&self.node_id).collect();
        if fresh.len() != held.len() || fresh.iter().any(|c| !held.contains(c.id.as_str())) {
            return None;
        }
        let now = fresh.into_iter().filter(|c| index.get(&c.id) != Some(c));
        Some(index.updated(std::iter::empty(), now))
    }

    /// `index` with the providers of `owners` read again from the mesh:
    /// only those that changed, appeared or went are touched.
    fn with_owners_again(&self, index: &Index, mut owners: Vec<String>) -> Index {
        owners.sort_unstable();
        owners.dedup();
        owners.retain(|o| *o != self.node_id);
        let mine: HashSet<String> = self.read().keys().cloned().collect();
        let (mut gone, mut now) = (Vec::new(), Vec::new());
        for o in &owners {
            let fresh: Vec<Candidate> = self
                .discovery
                .discovered_from(o)
                .into_iter()
                .filter(|c| c.owner_id != self.node_id && !mine.contains(&c.id))
                .collect();
            let kept: HashSet<&str> = fresh.iter().map(|c| c.id.as_str()).collect();
            gone.extend(
                index
                    .owned_by(o)
                    .filter(|id| !kept.contains(id))
                    .map(str::to_string),
            );
            now.extend(fresh.into_iter().filter(|c| index.get(&c.id) != Some(c)));
        }
        index.updated(gone.iter().map(String::as_str), now)
    }

    /// Every provider this node can place on, best tier first.
    pub fn candidates(&self) -> Vec<Candidate> {
        let mut out: Vec<Candidate> = self
            .local_candidates()
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        self.discovery.decorate(&mut out);
        let mine: HashSet<String> = out.iter().map(|c| c.id.clone()).collect();
        out.extend(
            self.discovery
                .discovered()
                .into_iter()
                .filter(|c| c.owner_id != self.node_id && !mine.contains(&c.id)),
        );
        out.sort_by(|a, b| (a.tier, &a.id).cmp(&(b.tier, &b.id)));
        out
    }

    /// The provider behind `c`: this node's own, or a proxy to its owner.
    pub fn provider_for(&self, c: &Candidate) -> Result<Arc<dyn Provider>, ResourceError> {
        if c.owner_id == self.node_id {
            return self.local(&c.id).map(|(p, _)| p).ok_or_else(|| {
                ResourceError::NotFound(format!("provider {:?} is no longer registered", c.id))
            });
        }
        Ok(Arc::new(RemoteProvider::new(
            c.clone(),
            self.discovery.caller(),
        )))
    }
}
