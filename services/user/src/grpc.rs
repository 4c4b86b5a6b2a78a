//! The `auction.v1.UserService` gRPC surface. Every RPC of the contract is
//! here; the ones not built yet answer UNIMPLEMENTED (reason
//! `NOT_IMPLEMENTED`, tracking issue 7) and are listed as such in the
//! README's status table.

use auction_platform::unimplemented;
use auction_proto::v1::user_service_server::UserService;
use auction_proto::v1::{
    ChangePasswordRequest, ChangePasswordResponse, ConfirmTotpRequest, ConfirmTotpResponse,
    CreateApiKeyRequest, CreateApiKeyResponse, DisableTotpRequest, DisableTotpResponse,
    EnrollTotpRequest, EnrollTotpResponse, ExchangeApiKeyRequest, ExchangeApiKeyResponse,
    GetProfileRequest, GetProfileResponse, GetPublicKeysRequest, GetPublicKeysResponse,
    GetReputationRequest, GetReputationResponse, LeaveFeedbackRequest, LeaveFeedbackResponse,
    ListApiKeysRequest, ListApiKeysResponse, ListFeedbackRequest, ListFeedbackResponse,
    ListUsersRequest, ListUsersResponse, LoginRequest, LoginResponse, LogoutRequest,
    LogoutResponse, RefreshRequest, RefreshResponse, RegisterRequest, RegisterResponse,
    RevokeApiKeyRequest, RevokeApiKeyResponse, SetRolesRequest, SetRolesResponse,
    SuspendUserRequest, SuspendUserResponse, UnsuspendUserRequest, UnsuspendUserResponse,
    UpdateProfileRequest, UpdateProfileResponse, VerifySecondFactorRequest,
    VerifySecondFactorResponse,
};
use tonic::{Request, Response, Status};

use crate::Service;

#[tonic::async_trait]
impl UserService for Service {
    async fn register(
        &self,
        _request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        Err(unimplemented("auction.v1.UserService/Register", 7))
    }

    async fn login(
        &self,
        _request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        Err(unimplemented("auction.v1.UserService/Login", 7))
    }

    async fn verify_second_factor(
        &self,
        _request: Request<VerifySecondFactorRequest>,
    ) -> Result<Response<VerifySecondFactorResponse>, Status> {
        Err(unimplemented(
            "auction.v1.UserService/VerifySecondFactor",
            7,
        ))
    }

    async fn refresh(
        &self,
        _request: Request<RefreshRequest>,
    ) -> Result<Response<RefreshResponse>, Status> {
        Err(unimplemented("auction.v1.UserService/Refresh", 7))
    }

    async fn logout(
        &self,
        _request: Request<LogoutRequest>,
    ) -> Result<Response<LogoutResponse>, Status> {
        Err(unimplemented("auction.v1.UserService/Logout", 7))
    }

    async fn change_password(
        &self,
        _request: Request<ChangePasswordRequest>,
    ) -> Result<Response<ChangePasswordResponse>, Status> {
        Err(unimplemented("auction.v1.UserService/ChangePassword", 7))
    }

    async fn enroll_totp(
        &self,
        _request: Request<EnrollTotpRequest>,
    ) -> Result<Response<EnrollTotpResponse>, Status> {
        Err(unimplemented("auction.v1.UserService/EnrollTotp", 7))
    }

    async fn confirm_totp(
        &self,
        _request: Request<ConfirmTotpRequest>,
    ) -> Result<Response<ConfirmTotpResponse>, Status> {
        Err(unimplemented("auction.v1.UserService/ConfirmTotp", 7))
    }

    async fn disable_totp(
        &self,
        _request: Request<DisableTotpRequest>,
    ) -> Result<Response<DisableTotpResponse>, Status> {
        Err(unimplemented("auction.v1.UserService/DisableTotp", 7))
    }

    async fn get_profile(
        &self,
        _request: Request<GetProfileRequest>,
    ) -> Result<Response<GetProfileResponse>, Status> {
        Err(unimplemented("auction.v1.UserService/GetProfile", 7))
    }

    async fn update_profile(
        &self,
        _request: Request<UpdateProfileRequest>,
    ) -> Result<Response<UpdateProfileResponse>, Status> {
        Err(unimplemented("auction.v1.UserService/UpdateProfile", 7))
    }

    async fn get_reputation(
        &self,
        _request: Request<GetReputationRequest>,
    ) -> Result<Response<GetReputationResponse>, Status> {
        Err(unimplemented("auction.v1.UserService/GetReputation", 7))
    }

    async fn leave_feedback(
        &self,
        _request: Request<LeaveFeedbackRequest>,
    ) -> Result<Response<LeaveFeedbackResponse>, Status> {
        Err(unimplemented("auction.v1.UserService/LeaveFeedback", 7))
    }

    async fn list_feedback(
        &self,
        _request: Request<ListFeedbackRequest>,
    ) -> Result<Response<ListFeedbackResponse>, Status> {
        Err(unimplemented("auction.v1.UserService/ListFeedback", 7))
    }

    async fn create_api_key(
        &self,
        _request: Request<CreateApiKeyRequest>,
    ) -> Result<Response<CreateApiKeyResponse>, Status> {
        Err(unimplemented("auction.v1.UserService/CreateApiKey", 7))
    }

    async fn list_api_keys(
        &self,
        _request: Request<ListApiKeysRequest>,
    ) -> Result<Response<ListApiKeysResponse>, Status> {
        Err(unimplemented("auction.v1.UserService/ListApiKeys", 7))
    }

    async fn revoke_api_key(
        &self,
        _request: Request<RevokeApiKeyRequest>,
    ) -> Result<Response<RevokeApiKeyResponse>, Status> {
        Err(unimplemented("auction.v1.UserService/RevokeApiKey", 7))
    }

    async fn exchange_api_key(
        &self,
        _request: Request<ExchangeApiKeyRequest>,
    ) -> Result<Response<ExchangeApiKeyResponse>, Status> {
        Err(unimplemented("auction.v1.UserService/ExchangeApiKey", 7))
    }

    async fn get_public_keys(
        &self,
        _request: Request<GetPublicKeysRequest>,
    ) -> Result<Response<GetPublicKeysResponse>, Status> {
        Err(unimplemented("auction.v1.UserService/GetPublicKeys", 7))
    }

    async fn list_users(
        &self,
        _request: Request<ListUsersRequest>,
    ) -> Result<Response<ListUsersResponse>, Status> {
        Err(unimplemented("auction.v1.UserService/ListUsers", 7))
    }

    async fn set_roles(
        &self,
        _request: Request<SetRolesRequest>,
    ) -> Result<Response<SetRolesResponse>, Status> {
        Err(unimplemented("auction.v1.UserService/SetRoles", 7))
    }

    async fn suspend_user(
        &self,
        _request: Request<SuspendUserRequest>,
    ) -> Result<Response<SuspendUserResponse>, Status> {
        Err(unimplemented("auction.v1.UserService/SuspendUser", 7))
    }

    async fn unsuspend_user(
        &self,
        _request: Request<UnsuspendUserRequest>,
    ) -> Result<Response<UnsuspendUserResponse>, Status> {
        Err(unimplemented("auction.v1.UserService/UnsuspendUser", 7))
    }
}
