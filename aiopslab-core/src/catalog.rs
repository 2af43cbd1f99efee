//! The AIOpsLab problem catalog: the 89 problem ids AIOpsLab ships, each with
//! its application, fault and task type.
//!
//! The id grammar is not uniform (`container_kill-detection`,
//! `noop_detection_social_network-1`), so this is a table rather than a parser.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What the agent is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum TaskType {
    /// Is there a fault? (`submit("Yes")` / `submit("No")`)
    Detection,
    /// Which services are faulty? (`submit(["svc", ...])`)
    Localization,
    /// What kind of fault at which level? (`submit({...})`)
    Analysis,
    /// Fix it (`submit()`).
    Mitigation,
}

impl TaskType {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskType::Detection => "detection",
            TaskType::Localization => "localization",
            TaskType::Analysis => "analysis",
            TaskType::Mitigation => "mitigation",
        }
    }
}

impl fmt::Display for TaskType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The application a problem deploys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum Application {
    /// DeathStarBench HotelReservation (namespace `test-hotel-reservation`).
    HotelReservation,
    /// DeathStarBench SocialNetwork (namespace `test-social-network`).
    SocialNetwork,
    /// The OpenTelemetry Astronomy Shop (namespace `astronomy-shop`).
    AstronomyShop,
    /// Flower federated learning, run with Docker rather than Kubernetes.
    Flower,
}

/// One catalog entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Problem {
    /// The id `Orchestrator.init_problem` takes.
    pub id: &'static str,
    /// The application it deploys.
    pub application: Application,
    /// The fault it injects.
    pub fault: &'static str,
    /// What the agent must do.
    pub task_type: TaskType,
}

const fn p(id: &'static str, application: Application, fault: &'static str, task_type: TaskType) -> Problem {
    Problem {
        id,
        application,
        fault,
        task_type,
    }
}

/// Every problem AIOpsLab ships, in its registry's order.
// One line per problem reads as the table it is.
#[rustfmt::skip]
pub const PROBLEMS: &[Problem] = &[
    p("k8s_target_port-misconfig-detection-1", Application::SocialNetwork, "Kubernetes Service targetPort misconfiguration", TaskType::Detection),
    p("k8s_target_port-misconfig-localization-1", Application::SocialNetwork, "Kubernetes Service targetPort misconfiguration", TaskType::Localization),
    p("k8s_target_port-misconfig-analysis-1", Application::SocialNetwork, "Kubernetes Service targetPort misconfiguration", TaskType::Analysis),
    p("k8s_target_port-misconfig-mitigation-1", Application::SocialNetwork, "Kubernetes Service targetPort misconfiguration", TaskType::Mitigation),
    p("k8s_target_port-misconfig-detection-2", Application::SocialNetwork, "Kubernetes Service targetPort misconfiguration", TaskType::Detection),
    p("k8s_target_port-misconfig-localization-2", Application::SocialNetwork, "Kubernetes Service targetPort misconfiguration", TaskType::Localization),
    p("k8s_target_port-misconfig-analysis-2", Application::SocialNetwork, "Kubernetes Service targetPort misconfiguration", TaskType::Analysis),
    p("k8s_target_port-misconfig-mitigation-2", Application::SocialNetwork, "Kubernetes Service targetPort misconfiguration", TaskType::Mitigation),
    p("k8s_target_port-misconfig-detection-3", Application::SocialNetwork, "Kubernetes Service targetPort misconfiguration", TaskType::Detection),
    p("k8s_target_port-misconfig-localization-3", Application::SocialNetwork, "Kubernetes Service targetPort misconfiguration", TaskType::Localization),
    p("k8s_target_port-misconfig-analysis-3", Application::SocialNetwork, "Kubernetes Service targetPort misconfiguration", TaskType::Analysis),
    p("k8s_target_port-misconfig-mitigation-3", Application::SocialNetwork, "Kubernetes Service targetPort misconfiguration", TaskType::Mitigation),
    p("auth_miss_mongodb-detection-1", Application::SocialNetwork, "MongoDB authentication missing", TaskType::Detection),
    p("auth_miss_mongodb-localization-1", Application::SocialNetwork, "MongoDB authentication missing", TaskType::Localization),
    p("auth_miss_mongodb-analysis-1", Application::SocialNetwork, "MongoDB authentication missing", TaskType::Analysis),
    p("auth_miss_mongodb-mitigation-1", Application::SocialNetwork, "MongoDB authentication missing", TaskType::Mitigation),
    p("revoke_auth_mongodb-detection-1", Application::HotelReservation, "MongoDB user permissions revoked", TaskType::Detection),
    p("revoke_auth_mongodb-localization-1", Application::HotelReservation, "MongoDB user permissions revoked", TaskType::Localization),
    p("revoke_auth_mongodb-analysis-1", Application::HotelReservation, "MongoDB user permissions revoked", TaskType::Analysis),
    p("revoke_auth_mongodb-mitigation-1", Application::HotelReservation, "MongoDB user permissions revoked", TaskType::Mitigation),
    p("revoke_auth_mongodb-detection-2", Application::HotelReservation, "MongoDB user permissions revoked", TaskType::Detection),
    p("revoke_auth_mongodb-localization-2", Application::HotelReservation, "MongoDB user permissions revoked", TaskType::Localization),
    p("revoke_auth_mongodb-analysis-2", Application::HotelReservation, "MongoDB user permissions revoked", TaskType::Analysis),
    p("revoke_auth_mongodb-mitigation-2", Application::HotelReservation, "MongoDB user permissions revoked", TaskType::Mitigation),
    p("user_unregistered_mongodb-detection-1", Application::HotelReservation, "MongoDB user unregistered", TaskType::Detection),
    p("user_unregistered_mongodb-localization-1", Application::HotelReservation, "MongoDB user unregistered", TaskType::Localization),
    p("user_unregistered_mongodb-analysis-1", Application::HotelReservation, "MongoDB user unregistered", TaskType::Analysis),
    p("user_unregistered_mongodb-mitigation-1", Application::HotelReservation, "MongoDB user unregistered", TaskType::Mitigation),
    p("user_unregistered_mongodb-detection-2", Application::HotelReservation, "MongoDB user unregistered", TaskType::Detection),
    p("user_unregistered_mongodb-localization-2", Application::HotelReservation, "MongoDB user unregistered", TaskType::Localization),
    p("user_unregistered_mongodb-analysis-2", Application::HotelReservation, "MongoDB user unregistered", TaskType::Analysis),
    p("user_unregistered_mongodb-mitigation-2", Application::HotelReservation, "MongoDB user unregistered", TaskType::Mitigation),
    p("misconfig_app_hotel_res-detection-1", Application::HotelReservation, "application misconfiguration (wrong database URL)", TaskType::Detection),
    p("misconfig_app_hotel_res-localization-1", Application::HotelReservation, "application misconfiguration (wrong database URL)", TaskType::Localization),
    p("misconfig_app_hotel_res-analysis-1", Application::HotelReservation, "application misconfiguration (wrong database URL)", TaskType::Analysis),
    p("misconfig_app_hotel_res-mitigation-1", Application::HotelReservation, "application misconfiguration (wrong database URL)", TaskType::Mitigation),
    p("scale_pod_zero_social_net-detection-1", Application::SocialNetwork, "deployment scaled to zero replicas", TaskType::Detection),
    p("scale_pod_zero_social_net-localization-1", Application::SocialNetwork, "deployment scaled to zero replicas", TaskType::Localization),
    p("scale_pod_zero_social_net-analysis-1", Application::SocialNetwork, "deployment scaled to zero replicas", TaskType::Analysis),
    p("scale_pod_zero_social_net-mitigation-1", Application::SocialNetwork, "deployment scaled to zero replicas", TaskType::Mitigation),
    p("assign_to_non_existent_node_social_net-detection-1", Application::SocialNetwork, "pod assigned to a non-existent node", TaskType::Detection),
    p("assign_to_non_existent_node_social_net-localization-1", Application::SocialNetwork, "pod assigned to a non-existent node", TaskType::Localization),
    p("assign_to_non_existent_node_social_net-analysis-1", Application::SocialNetwork, "pod assigned to a non-existent node", TaskType::Analysis),
    p("assign_to_non_existent_node_social_net-mitigation-1", Application::SocialNetwork, "pod assigned to a non-existent node", TaskType::Mitigation),
    p("container_kill-detection", Application::HotelReservation, "container killed (Chaos Mesh)", TaskType::Detection),
    p("container_kill-localization", Application::HotelReservation, "container killed (Chaos Mesh)", TaskType::Localization),
    p("pod_failure_hotel_res-detection-1", Application::HotelReservation, "pod failure (Chaos Mesh)", TaskType::Detection),
    p("pod_failure_hotel_res-localization-1", Application::HotelReservation, "pod failure (Chaos Mesh)", TaskType::Localization),
    p("pod_kill_hotel_res-detection-1", Application::HotelReservation, "pod killed (Chaos Mesh)", TaskType::Detection),
    p("pod_kill_hotel_res-localization-1", Application::HotelReservation, "pod killed (Chaos Mesh)", TaskType::Localization),
    p("network_loss_hotel_res-detection-1", Application::HotelReservation, "network packet loss (Chaos Mesh)", TaskType::Detection),
    p("network_loss_hotel_res-localization-1", Application::HotelReservation, "network packet loss (Chaos Mesh)", TaskType::Localization),
    p("network_delay_hotel_res-detection-1", Application::HotelReservation, "network delay (Chaos Mesh)", TaskType::Detection),
    p("network_delay_hotel_res-localization-1", Application::HotelReservation, "network delay (Chaos Mesh)", TaskType::Localization),
    p("noop_detection_hotel_reservation-1", Application::HotelReservation, "no fault (noop)", TaskType::Detection),
    p("noop_detection_social_network-1", Application::SocialNetwork, "no fault (noop)", TaskType::Detection),
    p("noop_detection_astronomy_shop-1", Application::AstronomyShop, "no fault (noop)", TaskType::Detection),
    p("astronomy_shop_ad_service_failure-detection-1", Application::AstronomyShop, "ad service failure (feature flag)", TaskType::Detection),
    p("astronomy_shop_ad_service_failure-localization-1", Application::AstronomyShop, "ad service failure (feature flag)", TaskType::Localization),
    p("astronomy_shop_ad_service_high_cpu-detection-1", Application::AstronomyShop, "ad service high CPU (feature flag)", TaskType::Detection),
    p("astronomy_shop_ad_service_high_cpu-localization-1", Application::AstronomyShop, "ad service high CPU (feature flag)", TaskType::Localization),
    p("astronomy_shop_ad_service_manual_gc-detection-1", Application::AstronomyShop, "ad service manual GC (feature flag)", TaskType::Detection),
    p("astronomy_shop_ad_service_manual_gc-localization-1", Application::AstronomyShop, "ad service manual GC (feature flag)", TaskType::Localization),
    p("astronomy_shop_cart_service_failure-detection-1", Application::AstronomyShop, "cart service failure (feature flag)", TaskType::Detection),
    p("astronomy_shop_cart_service_failure-localization-1", Application::AstronomyShop, "cart service failure (feature flag)", TaskType::Localization),
    p("astronomy_shop_image_slow_load-detection-1", Application::AstronomyShop, "image provider slow load (feature flag)", TaskType::Detection),
    p("astronomy_shop_image_slow_load-localization-1", Application::AstronomyShop, "image provider slow load (feature flag)", TaskType::Localization),
    p("astronomy_shop_kafka_queue_problems-detection-1", Application::AstronomyShop, "Kafka queue problems (feature flag)", TaskType::Detection),
    p("astronomy_shop_kafka_queue_problems-localization-1", Application::AstronomyShop, "Kafka queue problems (feature flag)", TaskType::Localization),
    p("astronomy_shop_kafka_queue_problems-mitigation-1", Application::AstronomyShop, "Kafka queue problems (feature flag)", TaskType::Mitigation),
    p("astronomy_shop_loadgenerator_flood_homepage-detection-1", Application::AstronomyShop, "load generator floods the homepage (feature flag)", TaskType::Detection),
    p("astronomy_shop_loadgenerator_flood_homepage-localization-1", Application::AstronomyShop, "load generator floods the homepage (feature flag)", TaskType::Localization),
    p("astronomy_shop_payment_service_failure-detection-1", Application::AstronomyShop, "payment service failure (feature flag)", TaskType::Detection),
    p("astronomy_shop_payment_service_failure-localization-1", Application::AstronomyShop, "payment service failure (feature flag)", TaskType::Localization),
    p("astronomy_shop_payment_service_unreachable-detection-1", Application::AstronomyShop, "payment service unreachable (feature flag)", TaskType::Detection),
    p("astronomy_shop_payment_service_unreachable-localization-1", Application::AstronomyShop, "payment service unreachable (feature flag)", TaskType::Localization),
    p("astronomy_shop_product_catalog_service_failure-detection-1", Application::AstronomyShop, "product catalog service failure (feature flag)", TaskType::Detection),
    p("astronomy_shop_product_catalog_service_failure-localization-1", Application::AstronomyShop, "product catalog service failure (feature flag)", TaskType::Localization),
    p("astronomy_shop_recommendation_service_cache_failure-detection-1", Application::AstronomyShop, "recommendation service cache failure (feature flag)", TaskType::Detection),
    p("astronomy_shop_recommendation_service_cache_failure-localization-1", Application::AstronomyShop, "recommendation service cache failure (feature flag)", TaskType::Localization),
    p("redeploy_without_PV-detection-1", Application::HotelReservation, "redeployed without persistent volumes", TaskType::Detection),
    p("redeploy_without_PV-analysis-1", Application::HotelReservation, "redeployed without persistent volumes", TaskType::Analysis),
    p("redeploy_without_PV-mitigation-1", Application::HotelReservation, "redeployed without persistent volumes", TaskType::Mitigation),
    p("wrong_bin_usage-detection-1", Application::HotelReservation, "wrong binary used in a deployment", TaskType::Detection),
    p("wrong_bin_usage-localization-1", Application::HotelReservation, "wrong binary used in a deployment", TaskType::Localization),
    p("wrong_bin_usage-analysis-1", Application::HotelReservation, "wrong binary used in a deployment", TaskType::Analysis),
    p("wrong_bin_usage-mitigation-1", Application::HotelReservation, "wrong binary used in a deployment", TaskType::Mitigation),
    p("flower_node_stop-detection", Application::Flower, "Flower node stopped (Docker)", TaskType::Detection),
    p("flower_model_misconfig-detection", Application::Flower, "Flower model misconfiguration (Docker)", TaskType::Detection),
];

/// Looks up a problem by id.
pub fn find(problem_id: &str) -> Option<&'static Problem> {
    PROBLEMS.iter().find(|problem| problem.id == problem_id)
}

/// The problems matching every given criterion.
pub fn filter(application: Option<Application>, task_type: Option<TaskType>) -> impl Iterator<Item = &'static Problem> {
    PROBLEMS.iter().filter(move |problem| {
        application.is_none_or(|a| problem.application == a) && task_type.is_none_or(|t| problem.task_type == t)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn holds_all_89_problems_once() {
        assert_eq!(PROBLEMS.len(), 89);
        let ids: HashSet<_> = PROBLEMS.iter().map(|p| p.id).collect();
        assert_eq!(ids.len(), 89);
    }

    #[test]
    fn counts_by_task_type_match_aiopslab() {
        let count = |t| filter(None, Some(t)).count();
        assert_eq!(count(TaskType::Detection), 34);
        assert_eq!(count(TaskType::Localization), 28);
        assert_eq!(count(TaskType::Analysis), 13);
        assert_eq!(count(TaskType::Mitigation), 14);
    }

    #[test]
    fn irregular_ids_are_classified() {
        let noop = find("noop_detection_social_network-1").unwrap();
        assert_eq!(
            (noop.application, noop.task_type),
            (Application::SocialNetwork, TaskType::Detection)
        );
        assert_eq!(
            find("container_kill-localization").unwrap().task_type,
            TaskType::Localization
        );
        assert_eq!(
            find("flower_node_stop-detection").unwrap().application,
            Application::Flower
        );
        assert!(find("misconfig_app_hotel_res-detection-2").is_none());
    }
}
