//! `demo.asset.v1.AssetService`: records uploads and serves them from a pretend CDN.

use std::collections::HashMap;
use std::sync::Mutex;

use tonic::{Request, Response, Status};

use crate::control::{CallKind, DemoHandle, lock};
use crate::method;
use crate::pb::asset::asset_service_server::AssetService;
use crate::pb::asset::{Asset, GetAssetRequest, GetAssetResponse, UploadAssetRequest, UploadAssetResponse};

const CDN_BASE: &str = "https://cdn.demo.local/assets";

pub(crate) struct Assets {
    control: DemoHandle,
    library: Mutex<Library>,
}

#[derive(Default)]
struct Library {
    by_id: HashMap<String, Asset>,
    last_sequence: u64,
}

impl Assets {
    pub(crate) fn new(control: DemoHandle) -> Self {
        let library = Library { by_id: HashMap::with_capacity(control.capacity()), last_sequence: 0 };
        Self { control, library: Mutex::new(library) }
    }
}

#[tonic::async_trait]
impl AssetService for Assets {
    async fn upload_asset(
        &self,
        request: Request<UploadAssetRequest>,
    ) -> Result<Response<UploadAssetResponse>, Status> {
        let _call = self.control.admit(method::UPLOAD_ASSET, &request, CallKind::Unary).await?;
        let request = request.into_inner();
        if request.source_url.trim().is_empty() {
            return Err(Status::invalid_argument("source_url must not be empty"));
        }
        let content_type = if request.content_type.is_empty() {
            guess_content_type(&request.source_url).to_owned()
        } else {
            request.content_type
        };

        let mut library = lock(&self.library);
        library.last_sequence += 1;
        let id = format!("ast_{:06}", library.last_sequence);
        let asset = Asset {
            url: format!("{CDN_BASE}/{id}"),
            owner_id: request.owner_id,
            content_type,
            // Nothing is fetched; a size derived from the URL keeps responses deterministic.
            size_bytes: 1024 * i64::try_from(request.source_url.len()).unwrap_or(i64::MAX / 1024),
            id,
        };
        library.by_id.insert(asset.id.clone(), asset.clone());
        Ok(Response::new(UploadAssetResponse { asset: Some(asset) }))
    }

    async fn get_asset(&self, request: Request<GetAssetRequest>) -> Result<Response<GetAssetResponse>, Status> {
        let _call = self.control.admit(method::GET_ASSET, &request, CallKind::Unary).await?;
        let asset_id = request.into_inner().asset_id;
        let asset = lock(&self.library)
            .by_id
            .get(&asset_id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("asset {asset_id} not found")))?;
        Ok(Response::new(GetAssetResponse { asset: Some(asset) }))
    }
}

/// Guesses a MIME type from the extension of the URL's last path segment.
fn guess_content_type(source_url: &str) -> &'static str {
    let path = source_url.split(['?', '#']).next().unwrap_or(source_url);
    let file_name = path.rsplit('/').next().unwrap_or(path);
    let extension = match file_name.rsplit_once('.') {
        Some((_, extension)) => extension.to_ascii_lowercase(),
        None => return "application/octet-stream",
    };
    match extension.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "pdf" => "application/pdf",
        "json" => "application/json",
        "txt" => "text/plain",
        "html" | "htm" => "text/html",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::guess_content_type;

    #[test]
    fn content_type_follows_the_extension() {
        assert_eq!(guess_content_type("https://x.test/a/avatar.PNG"), "image/png");
        assert_eq!(guess_content_type("https://x.test/pic.jpeg?size=2#top"), "image/jpeg");
        assert_eq!(guess_content_type("https://x.test/v1.2/blob"), "application/octet-stream");
        assert_eq!(guess_content_type(""), "application/octet-stream");
    }
}
