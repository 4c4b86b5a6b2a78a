//! The `auction.v1.NotificationService` gRPC surface. Every RPC of the contract is
//! here; the ones not built yet answer UNIMPLEMENTED (reason
//! `NOT_IMPLEMENTED`, tracking issue 10) and are listed as such in the
//! README's status table.

use auction_platform::unimplemented;
use auction_proto::v1::notification_service_server::NotificationService;
use auction_proto::v1::{
    DeleteWebhookRequest, DeleteWebhookResponse, GetNotificationPreferencesRequest,
    GetNotificationPreferencesResponse, GetUnreadCountRequest, GetUnreadCountResponse,
    ListNotificationsRequest, ListNotificationsResponse, ListWebhookDeliveriesRequest,
    ListWebhookDeliveriesResponse, ListWebhooksRequest, ListWebhooksResponse,
    MarkNotificationsReadRequest, MarkNotificationsReadResponse, RegisterWebhookRequest,
    RegisterWebhookResponse, RotateWebhookSecretRequest, RotateWebhookSecretResponse,
    SetWebhookEnabledRequest, SetWebhookEnabledResponse, SubscribeRequest, SubscribeResponse,
    UpdateNotificationPreferencesRequest, UpdateNotificationPreferencesResponse,
};
use tonic::{Request, Response, Status};

use crate::Service;

/// The stream type of every server-streaming RPC of this service.
type ResponseStream<T> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl NotificationService for Service {
    type SubscribeStream = ResponseStream<SubscribeResponse>;
    async fn subscribe(
        &self,
        _request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(unimplemented(
            "auction.v1.NotificationService/Subscribe",
            10,
        ))
    }

    async fn list_notifications(
        &self,
        _request: Request<ListNotificationsRequest>,
    ) -> Result<Response<ListNotificationsResponse>, Status> {
        Err(unimplemented(
            "auction.v1.NotificationService/ListNotifications",
            10,
        ))
    }

    async fn get_unread_count(
        &self,
        _request: Request<GetUnreadCountRequest>,
    ) -> Result<Response<GetUnreadCountResponse>, Status> {
        Err(unimplemented(
            "auction.v1.NotificationService/GetUnreadCount",
            10,
        ))
    }

    async fn mark_notifications_read(
        &self,
        _request: Request<MarkNotificationsReadRequest>,
    ) -> Result<Response<MarkNotificationsReadResponse>, Status> {
        Err(unimplemented(
            "auction.v1.NotificationService/MarkNotificationsRead",
            10,
        ))
    }

    async fn get_notification_preferences(
        &self,
        _request: Request<GetNotificationPreferencesRequest>,
    ) -> Result<Response<GetNotificationPreferencesResponse>, Status> {
        Err(unimplemented(
            "auction.v1.NotificationService/GetNotificationPreferences",
            10,
        ))
    }

    async fn update_notification_preferences(
        &self,
        _request: Request<UpdateNotificationPreferencesRequest>,
    ) -> Result<Response<UpdateNotificationPreferencesResponse>, Status> {
        Err(unimplemented(
            "auction.v1.NotificationService/UpdateNotificationPreferences",
            10,
        ))
    }

    async fn register_webhook(
        &self,
        _request: Request<RegisterWebhookRequest>,
    ) -> Result<Response<RegisterWebhookResponse>, Status> {
        Err(unimplemented(
            "auction.v1.NotificationService/RegisterWebhook",
            10,
        ))
    }

    async fn list_webhooks(
        &self,
        _request: Request<ListWebhooksRequest>,
    ) -> Result<Response<ListWebhooksResponse>, Status> {
        Err(unimplemented(
            "auction.v1.NotificationService/ListWebhooks",
            10,
        ))
    }

    async fn set_webhook_enabled(
        &self,
        _request: Request<SetWebhookEnabledRequest>,
    ) -> Result<Response<SetWebhookEnabledResponse>, Status> {
        Err(unimplemented(
            "auction.v1.NotificationService/SetWebhookEnabled",
            10,
        ))
    }

    async fn rotate_webhook_secret(
        &self,
        _request: Request<RotateWebhookSecretRequest>,
    ) -> Result<Response<RotateWebhookSecretResponse>, Status> {
        Err(unimplemented(
            "auction.v1.NotificationService/RotateWebhookSecret",
            10,
        ))
    }

    async fn delete_webhook(
        &self,
        _request: Request<DeleteWebhookRequest>,
    ) -> Result<Response<DeleteWebhookResponse>, Status> {
        Err(unimplemented(
            "auction.v1.NotificationService/DeleteWebhook",
            10,
        ))
    }

    async fn list_webhook_deliveries(
        &self,
        _request: Request<ListWebhookDeliveriesRequest>,
    ) -> Result<Response<ListWebhookDeliveriesResponse>, Status> {
        Err(unimplemented(
            "auction.v1.NotificationService/ListWebhookDeliveries",
            10,
        ))
    }
}
