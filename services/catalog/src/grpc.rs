//! The `auction.v1.CatalogService` gRPC surface. Every RPC of the contract is
//! here and delegates to its module.

use auction_proto::v1::catalog_service_server::CatalogService;
use auction_proto::v1::{
    AddToWatchlistRequest, AddToWatchlistResponse, BeginMediaUploadRequest,
    BeginMediaUploadResponse, CancelListingRequest, CancelListingResponse, Category,
    CompleteMediaUploadRequest, CompleteMediaUploadResponse, CreateItemRequest, CreateItemResponse,
    CreateListingRequest, CreateListingResponse, CreateLiveSessionRequest,
    CreateLiveSessionResponse, DeleteItemRequest, DeleteItemResponse, DeleteMediaRequest,
    DeleteMediaResponse, GetItemRequest, GetItemResponse, GetListingRequest, GetListingResponse,
    GetLiveSessionRequest, GetLiveSessionResponse, ListCategoriesRequest, ListCategoriesResponse,
    ListItemsRequest, ListItemsResponse, ListListingsRequest, ListListingsResponse,
    ListLiveSessionsRequest, ListLiveSessionsResponse, ListRecommendedListingsRequest,
    ListRecommendedListingsResponse, ListTrendingListingsRequest, ListTrendingListingsResponse,
    ListWatchlistRequest, ListWatchlistResponse, RemoveFromWatchlistRequest,
    RemoveFromWatchlistResponse, SearchListingsRequest, SearchListingsResponse, UpdateItemRequest,
    UpdateItemResponse, UpdateListingRequest, UpdateListingResponse, UploadMediaChunkRequest,
    UploadMediaChunkResponse, UploadMediaRequest, UploadMediaResponse,
};
use tonic::{Request, Response, Status, Streaming};

use uuid::Uuid;

use crate::error::CatalogError;
use crate::{Service, categories, store};

/// How long clients may cache the category tree.
const CATEGORY_CACHE: std::time::Duration = std::time::Duration::from_secs(60);

// Every handler first lets the peers facility learn where this process
// listens (the local address of the call): media URLs and calls to the
// other services default to it.
#[tonic::async_trait]
impl CatalogService for Service {
    async fn list_categories(
        &self,
        request: Request<ListCategoriesRequest>,
    ) -> Result<Response<ListCategoriesResponse>, Status> {
        let request = request.into_inner();
        let root = match request.root_category_id.as_str() {
            "" => None,
            text => Some(Uuid::parse_str(text).map_err(|_| CatalogError::Invalid {
                field: "root_category_id",
                message: format!("`{text}` is not a UUID"),
            })?),
        };
        let stored = store::list_categories(&self.inner.database)
            .await
            .map_err(CatalogError::from)?;
        let placed = categories::depth_first(&stored, root, request.max_depth)?;
        let counts = self.inner.active_counts_by_path().await?;
        let active_under = |path: &str| -> u32 {
            let prefix = format!("{path}/");
            let total: i64 = counts
                .iter()
                .filter(|(listing_path, _)| {
                    *listing_path == path || listing_path.starts_with(&prefix)
                })
                .map(|(_, count)| *count)
                .sum();
            u32::try_from(total).unwrap_or(u32::MAX)
        };
        let categories = placed
            .into_iter()
            .map(|node| Category {
                category_id: node.category.id.to_string(),
                parent_category_id: node
                    .category
                    .parent_id
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
                name: node.category.name.clone(),
                slug: node.category.slug.clone(),
                path_names: node.path_names.into_iter().map(str::to_owned).collect(),
                depth: node.depth,
                position: node.category.position,
                active_listing_count: active_under(&node.category.path),
            })
            .collect();
        let cache_until = std::time::SystemTime::now() + CATEGORY_CACHE;
        Ok(Response::new(ListCategoriesResponse {
            categories,
            cache_until: Some(prost_types::Timestamp::from(cache_until)),
        }))
    }

    async fn create_item(
        &self,
        request: Request<CreateItemRequest>,
    ) -> Result<Response<CreateItemResponse>, Status> {
        self.inner.peers.learn_from(&request);
        self.inner.create_item(request).await
    }

    async fn get_item(
        &self,
        request: Request<GetItemRequest>,
    ) -> Result<Response<GetItemResponse>, Status> {
        self.inner.peers.learn_from(&request);
        self.inner.get_item(request).await
    }

    async fn update_item(
        &self,
        request: Request<UpdateItemRequest>,
    ) -> Result<Response<UpdateItemResponse>, Status> {
        self.inner.peers.learn_from(&request);
        self.inner.update_item(request).await
    }

    async fn list_items(
        &self,
        request: Request<ListItemsRequest>,
    ) -> Result<Response<ListItemsResponse>, Status> {
        self.inner.peers.learn_from(&request);
        self.inner.list_items(request).await
    }

    async fn delete_item(
        &self,
        request: Request<DeleteItemRequest>,
    ) -> Result<Response<DeleteItemResponse>, Status> {
        self.inner.peers.learn_from(&request);
        self.inner.delete_item(request).await
    }

    async fn upload_media(
        &self,
        request: Request<Streaming<UploadMediaRequest>>,
    ) -> Result<Response<UploadMediaResponse>, Status> {
        self.inner.peers.learn_from(&request);
        self.inner.upload_media(request).await
    }

    async fn begin_media_upload(
        &self,
        request: Request<BeginMediaUploadRequest>,
    ) -> Result<Response<BeginMediaUploadResponse>, Status> {
        self.inner.peers.learn_from(&request);
        self.inner.begin_media_upload(request).await
    }

    async fn upload_media_chunk(
        &self,
        request: Request<UploadMediaChunkRequest>,
    ) -> Result<Response<UploadMediaChunkResponse>, Status> {
        self.inner.peers.learn_from(&request);
        self.inner.upload_media_chunk(request).await
    }

    async fn complete_media_upload(
        &self,
        request: Request<CompleteMediaUploadRequest>,
    ) -> Result<Response<CompleteMediaUploadResponse>, Status> {
        self.inner.peers.learn_from(&request);
        self.inner.complete_media_upload(request).await
    }

    async fn delete_media(
        &self,
        request: Request<DeleteMediaRequest>,
    ) -> Result<Response<DeleteMediaResponse>, Status> {
        self.inner.peers.learn_from(&request);
        self.inner.delete_media(request).await
    }

    async fn create_listing(
        &self,
        request: Request<CreateListingRequest>,
    ) -> Result<Response<CreateListingResponse>, Status> {
        self.inner.peers.learn_from(&request);
        self.inner.create_listing(request).await
    }

    async fn update_listing(
        &self,
        request: Request<UpdateListingRequest>,
    ) -> Result<Response<UpdateListingResponse>, Status> {
        self.inner.peers.learn_from(&request);
        self.inner.update_listing(request).await
    }

    async fn get_listing(
        &self,
        request: Request<GetListingRequest>,
    ) -> Result<Response<GetListingResponse>, Status> {
        self.inner.peers.learn_from(&request);
        self.inner.get_listing(request).await
    }

    async fn list_listings(
        &self,
        request: Request<ListListingsRequest>,
    ) -> Result<Response<ListListingsResponse>, Status> {
        self.inner.peers.learn_from(&request);
        self.inner.list_listings(request).await
    }

    async fn cancel_listing(
        &self,
        request: Request<CancelListingRequest>,
    ) -> Result<Response<CancelListingResponse>, Status> {
        self.inner.peers.learn_from(&request);
        self.inner.cancel_listing(request).await
    }

    async fn search_listings(
        &self,
        request: Request<SearchListingsRequest>,
    ) -> Result<Response<SearchListingsResponse>, Status> {
        self.inner.peers.learn_from(&request);
        self.inner.search_listings(request).await
    }

    async fn list_trending_listings(
        &self,
        request: Request<ListTrendingListingsRequest>,
    ) -> Result<Response<ListTrendingListingsResponse>, Status> {
        self.inner.peers.learn_from(&request);
        self.inner.list_trending_listings(request).await
    }

    async fn list_recommended_listings(
        &self,
        request: Request<ListRecommendedListingsRequest>,
    ) -> Result<Response<ListRecommendedListingsResponse>, Status> {
        self.inner.peers.learn_from(&request);
        self.inner.list_recommended_listings(request).await
    }

    async fn create_live_session(
        &self,
        request: Request<CreateLiveSessionRequest>,
    ) -> Result<Response<CreateLiveSessionResponse>, Status> {
        self.inner.peers.learn_from(&request);
        self.inner.create_live_session(request).await
    }

    async fn get_live_session(
        &self,
        request: Request<GetLiveSessionRequest>,
    ) -> Result<Response<GetLiveSessionResponse>, Status> {
        self.inner.peers.learn_from(&request);
        self.inner.get_live_session(request).await
    }

    async fn list_live_sessions(
        &self,
        request: Request<ListLiveSessionsRequest>,
    ) -> Result<Response<ListLiveSessionsResponse>, Status> {
        self.inner.peers.learn_from(&request);
        self.inner.list_live_sessions(request).await
    }

    async fn add_to_watchlist(
        &self,
        request: Request<AddToWatchlistRequest>,
    ) -> Result<Response<AddToWatchlistResponse>, Status> {
        self.inner.peers.learn_from(&request);
        self.inner.add_to_watchlist(request).await
    }

    async fn remove_from_watchlist(
        &self,
        request: Request<RemoveFromWatchlistRequest>,
    ) -> Result<Response<RemoveFromWatchlistResponse>, Status> {
        self.inner.peers.learn_from(&request);
        self.inner.remove_from_watchlist(request).await
    }

    async fn list_watchlist(
        &self,
        request: Request<ListWatchlistRequest>,
    ) -> Result<Response<ListWatchlistResponse>, Status> {
        self.inner.peers.learn_from(&request);
        self.inner.list_watchlist(request).await
    }
}
