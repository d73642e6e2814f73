//! End-to-end tests of ecsd through the real `aws-sdk-ecs` client live in `tests/`.
