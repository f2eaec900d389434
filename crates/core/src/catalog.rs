//! The catalog: every backend service and action Nexus may call, known from protobuf descriptors.
//!
//! Patterns can only call actions in the catalog: there is no way to name an arbitrary URL. The
//! catalog is built by the server (which fetches descriptors by reflection or reads them from
//! files) and is immutable once built; a change swaps in a new `Arc<Catalog>`.

use std::{collections::BTreeMap, sync::Arc};

use prost_reflect::{DescriptorPool, MethodDescriptor};

use crate::schema;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("backend `{backend}`: invalid descriptors: {message}")]
    Descriptors { backend: String, message: String },
    #[error("backend `{backend}`: service `{service}` is not in its descriptors")]
    UnknownService { backend: String, service: String },
    #[error("service `{service}` is offered by both backend `{first}` and backend `{second}`")]
    Duplicate { service: String, first: String, second: String },
}

/// Where a backend's descriptors came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DescriptorSource {
    Reflection,
    DescriptorSet,
    Protos,
    /// The store's copy from an earlier discovery (the backend could not be reached).
    Cache,
}

impl DescriptorSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reflection => "reflection",
            Self::DescriptorSet => "descriptor_set",
            Self::Protos => "protos",
            Self::Cache => "cache",
        }
    }
}

/// A backend gRPC service in the catalog.
#[derive(Debug, Clone)]
pub struct ServiceEntry {
    /// Fully-qualified service name, e.g. `demo.user.v1.UserService`.
    pub name: String,
    /// The name the backend was plugged in under.
    pub backend: Arc<str>,
    pub endpoint: String,
    pub source: DescriptorSource,
    pub actions: Vec<Action>,
}

/// One callable method: `package.Service/Method`.
#[derive(Debug, Clone)]
pub struct Action {
    /// `package.Service/Method`.
    pub name: Arc<str>,
    /// The HTTP/2 path of the call, `/package.Service/Method`.
    pub path: Arc<str>,
    pub backend: Arc<str>,
    pub method: MethodDescriptor,
}

impl Action {
    pub fn is_server_streaming(&self) -> bool {
        self.method.is_server_streaming()
    }

    pub fn is_client_streaming(&self) -> bool {
        self.method.is_client_streaming()
    }

    pub fn input_schema(&self) -> serde_json::Value {
        schema::message_schema(&self.method.input())
    }

    pub fn output_schema(&self) -> serde_json::Value {
        schema::message_schema(&self.method.output())
    }

    /// The method's comment in its proto (empty without source info).
    pub fn description(&self) -> String {
        schema::method_comment(&self.method).unwrap_or_default()
    }
}

/// All known services and actions.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    services: Vec<ServiceEntry>,
    actions: BTreeMap<Arc<str>, Action>,
}

impl Catalog {
    pub fn builder() -> CatalogBuilder {
        CatalogBuilder::default()
    }

    pub fn action(&self, name: &str) -> Option<&Action> {
        self.actions.get(name)
    }

    pub fn actions(&self) -> impl Iterator<Item = &Action> {
        self.actions.values()
    }

    pub fn services(&self) -> &[ServiceEntry] {
        &self.services
    }

    /// Names of actions close to `name`, for "did you mean" in diagnostics.
    pub fn action_names(&self) -> impl Iterator<Item = &str> {
        self.actions.keys().map(|k| &**k)
    }
}

/// Collects backends' descriptors into a [`Catalog`].
#[derive(Debug, Default)]
pub struct CatalogBuilder {
    catalog: Catalog,
}

impl CatalogBuilder {
    /// Adds the services a backend offers. `fds` holds the descriptors (each backend gets its own
    /// descriptor pool, so two backends may ship different copies of a shared import);
    /// `services` names the services to expose, or all services in `fds` when empty.
    pub fn add_backend(
        &mut self,
        backend: &str,
        endpoint: &str,
        source: DescriptorSource,
        fds: prost_types::FileDescriptorSet,
        services: &[String],
    ) -> Result<&mut Self, CatalogError> {
        let pool = DescriptorPool::from_file_descriptor_set(fds)
            .map_err(|e| CatalogError::Descriptors { backend: backend.to_string(), message: e.to_string() })?;
        let backend_name: Arc<str> = Arc::from(backend);
        let wanted: Vec<_> = if services.is_empty() {
            pool.services().collect()
        } else {
            services
                .iter()
                .map(|name| {
                    pool.get_service_by_name(name).ok_or_else(|| CatalogError::UnknownService {
                        backend: backend.to_string(),
                        service: name.clone(),
                    })
                })
                .collect::<Result<_, _>>()?
        };
        for service in wanted {
            // Reflection and health are infrastructure, not actions a pattern should call.
            if service.full_name().starts_with("grpc.reflection.") || service.full_name().starts_with("grpc.health.") {
                continue;
            }
            if let Some(existing) = self.catalog.services.iter().find(|s| s.name == service.full_name()) {
                return Err(CatalogError::Duplicate {
                    service: service.full_name().to_string(),
                    first: existing.backend.to_string(),
                    second: backend.to_string(),
                });
            }
            let actions: Vec<Action> = service
                .methods()
                .map(|method| {
                    let name = format!("{}/{}", service.full_name(), method.name());
                    Action {
                        path: Arc::from(format!("/{name}")),
                        name: Arc::from(name),
                        backend: backend_name.clone(),
                        method,
                    }
                })
                .collect();
            for action in &actions {
                self.catalog.actions.insert(action.name.clone(), action.clone());
            }
            self.catalog.services.push(ServiceEntry {
                name: service.full_name().to_string(),
                backend: backend_name.clone(),
                endpoint: endpoint.to_string(),
                source,
                actions,
            });
        }
        Ok(self)
    }

    pub fn build(mut self) -> Catalog {
        self.catalog.services.sort_by(|a, b| a.name.cmp(&b.name));
        self.catalog
    }
}
