//! What the compiler found wrong with a resource, in a form ready to become a status condition.

use std::fmt;

/// Kind of a resource the compiler reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A `ModelPool`.
    ModelPool,
    /// A `SemanticRoute`.
    SemanticRoute,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::ModelPool => "ModelPool",
            Kind::SemanticRoute => "SemanticRoute",
        })
    }
}

/// Namespace and name of a resource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// A key from namespace and name.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The status condition a diagnostic bears on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConditionType {
    /// The route is valid and in the routing table.
    Accepted,
    /// Every pool and model a route names exists.
    ResolvedRefs,
    /// The pool has ready endpoints.
    Ready,
}

impl ConditionType {
    /// The condition's `type` as Kubernetes shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Accepted => "Accepted",
            ConditionType::ResolvedRefs => "ResolvedRefs",
            ConditionType::Ready => "Ready",
        }
    }
}

/// Machine-readable cause of a diagnostic; its name is the condition's `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// A target names a pool that does not exist in the route's namespace.
    PoolNotFound,
    /// A target names a model its pool does not serve.
    ModelNotServed,
    /// The default target does not resolve, so the route cannot be used.
    DefaultTargetUnresolved,
    /// No target of a decision resolves; the decision is left out.
    NoResolvedTarget,
    /// A decision refers to a signal the route does not define.
    UnknownSignal,
    /// Two signals of a route share a name.
    DuplicateSignalName,
    /// A decision can never match because an earlier one always matches first.
    UnreachableDecision,
    /// Another route governs exactly the same requests and takes precedence.
    Conflicted,
    /// The target's pool is in another namespace that does not admit the route's.
    RefNotPermitted,
    /// The pool has no ready endpoint.
    NoReadyEndpoints,
    /// A static address is not an `ip:port`.
    InvalidAddress,
    /// A signal needs a model the router has not loaded.
    SignalNotLoaded,
    /// A target turns reasoning on for a model whose family has no reasoning switch.
    ReasoningUnsupported,
}

impl Reason {
    /// The reason in CamelCase, as status conditions carry it.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::PoolNotFound => "PoolNotFound",
            Reason::ModelNotServed => "ModelNotServed",
            Reason::DefaultTargetUnresolved => "DefaultTargetUnresolved",
            Reason::NoResolvedTarget => "NoResolvedTarget",
            Reason::UnknownSignal => "UnknownSignal",
            Reason::DuplicateSignalName => "DuplicateSignalName",
            Reason::UnreachableDecision => "UnreachableDecision",
            Reason::Conflicted => "Conflicted",
            Reason::RefNotPermitted => "RefNotPermitted",
            Reason::NoReadyEndpoints => "NoReadyEndpoints",
            Reason::InvalidAddress => "InvalidAddress",
            Reason::SignalNotLoaded => "SignalNotLoaded",
            Reason::ReasoningUnsupported => "ReasoningUnsupported",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much a diagnostic matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The condition it bears on is False; part or all of the resource is left out.
    Error,
    /// Worth a person's attention; the resource is in force as written.
    Warning,
}

/// One finding about one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Kind of the resource.
    pub kind: Kind,
    /// The resource.
    pub object: ObjectKey,
    /// The condition it bears on.
    pub condition: ConditionType,
    /// Why, machine-readable.
    pub reason: Reason,
    /// Whether the condition turns False.
    pub severity: Severity,
    /// A sentence that names the problem and the fix.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {} ({}): {}",
            self.kind,
            self.object,
            self.condition.as_str(),
            self.reason,
            self.message
        )
    }
}
