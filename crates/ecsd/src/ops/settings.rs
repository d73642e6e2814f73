//! Account settings: PutAccountSetting, PutAccountSettingDefault, DeleteAccountSetting and
//! ListAccountSettings. A principal's own setting wins over the account default (stored under
//! the account's root ARN), which wins over the value AWS manages; [`effective`] is that rule
//! for the operations a setting changes (a new cluster's `containerInsights`).

use super::{Ctx, Page};
use crate::domain::records::AccountSetting;
use crate::error::{ApiError, ErrorCode};
use crate::shapes::{
    DeleteAccountSettingRequest, DeleteAccountSettingResponse, ListAccountSettingsRequest, ListAccountSettingsResponse,
    PutAccountSettingDefaultRequest, PutAccountSettingDefaultResponse, PutAccountSettingRequest,
    PutAccountSettingResponse, Setting, SettingName, SettingType,
};
use crate::store::{StoreExt, Tx};

/// Every setting: its name, the value AWS manages when nobody set one, and the values it takes.
const SETTINGS: &[(&str, &str, &[&str])] = &[
    ("awsvpcTrunking", "disabled", &["enabled", "disabled"]),
    ("containerInsights", "disabled", &["enabled", "disabled", "enhanced"]),
    ("containerInstanceLongArnFormat", "enabled", &["enabled"]),
    ("defaultLogDriverMode", "non-blocking", &["blocking", "non-blocking"]),
    ("fargateEventWindows", "disabled", &["enabled", "disabled"]),
    ("fargateFIPSMode", "disabled", &["enabled", "disabled"]),
    ("fargateTaskRetirementWaitPeriod", "7", &["0", "7", "14"]),
    ("guardDutyActivate", "off", &["on", "off"]),
    ("serviceLongArnFormat", "enabled", &["enabled"]),
    ("tagResourceAuthorization", "on", &["on", "off"]),
    ("taskLongArnFormat", "enabled", &["enabled"]),
];

/// Settings only the account default can carry.
const ACCOUNT_ONLY: &[&str] = &["fargateFIPSMode", "fargateTaskRetirementWaitPeriod"];

const MAX_RESULTS: i32 = 10;

fn root_arn(account: &str) -> String {
    format!("arn:aws:iam::{account}:root")
}

fn check_value(name: &str, value: &str) -> Result<(), ApiError> {
    let (_, _, values) = SETTINGS
        .iter()
        .find(|(n, _, _)| *n == name)
        .expect("every SettingName is listed");
    if values.contains(&value) {
        return Ok(());
    }
    if name.ends_with("LongArnFormat") {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid value '{value}' for '{name}': the long ARN format can no longer be turned off; the only value is enabled."
        )));
    }
    Err(ApiError::invalid_parameter(format!(
        "Invalid value '{value}' for '{name}': the valid values are {}.",
        values.join(", ")
    )))
}

/// The principal a request names (the caller when it names none). Only the principal itself, or
/// one that may act on every cluster of the account (ecsd's equivalent of the root user), may
/// name a principal.
fn principal_of(ctx: &Ctx, requested: Option<&str>) -> Result<String, ApiError> {
    let own = ctx.principal.arn();
    let Some(requested) = requested else {
        return Ok(own);
    };
    let account = &ctx.scope.account;
    let iam = format!("arn:aws:iam::{account}:");
    let valid = requested
        .strip_prefix(&iam)
        .is_some_and(|rest| rest == "root" || rest.starts_with("user/") || rest.starts_with("role/"));
    if !valid {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid 'principalArn': {requested} is not the ARN of a user, a role or the root user of account {account}."
        )));
    }
    if requested != own && !ctx.principal.may_use_cluster("*") {
        return Err(ApiError::new(
            ErrorCode::AccessDeniedException,
            format!("User: {own} is not authorized to change or list the account settings of {requested}"),
        ));
    }
    Ok(requested.to_owned())
}

fn shown(setting: &AccountSetting, kind: SettingType) -> Setting {
    Setting {
        name: parse_name(&setting.name),
        value: Some(setting.value.clone()),
        principal_arn: Some(setting.principal_arn.clone()),
        r#type: Some(kind),
    }
}

fn parse_name(name: &str) -> Option<SettingName> {
    serde_json::from_value(name.into()).ok()
}

/// The value of setting `name` for `principal`: its own, else the account's, else AWS's.
pub(crate) fn effective(
    tx: &mut Tx<'_>,
    principal: &str,
    name: &str,
) -> Result<(AccountSetting, SettingType), ApiError> {
    let root = root_arn(&tx.scope().account);
    for who in [principal, root.as_str()] {
        if let Some(setting) = tx.get::<AccountSetting>(&[who.into(), name.into()])? {
            return Ok((setting, SettingType::User));
        }
    }
    let (_, default, _) = SETTINGS
        .iter()
        .find(|(n, _, _)| *n == name)
        .expect("every SettingName is listed");
    Ok((
        AccountSetting {
            name: name.to_owned(),
            value: (*default).to_owned(),
            principal_arn: principal.to_owned(),
        },
        SettingType::AwsManaged,
    ))
}

async fn put(ctx: &Ctx, principal: String, name: SettingName, value: String) -> Result<Setting, ApiError> {
    let name = name.as_str();
    check_value(name, &value)?;
    if ACCOUNT_ONLY.contains(&name) && principal != root_arn(&ctx.scope.account) {
        return Err(ApiError::invalid_parameter(format!(
            "'{name}' can only be set as the account default (PutAccountSettingDefault, or the root user's principalArn)."
        )));
    }
    let setting = AccountSetting {
        name: name.to_owned(),
        value,
        principal_arn: principal,
    };
    ctx.store
        .write(&ctx.scope, move |tx| {
            tx.put(&setting)?;
            Ok(shown(&setting, SettingType::User))
        })
        .await
}

pub async fn put_account_setting(
    ctx: &Ctx,
    req: PutAccountSettingRequest,
) -> Result<PutAccountSettingResponse, ApiError> {
    let principal = principal_of(ctx, req.principal_arn.as_deref())?;
    let setting = put(ctx, principal, req.name, req.value).await?;
    Ok(PutAccountSettingResponse { setting: Some(setting) })
}

pub async fn put_account_setting_default(
    ctx: &Ctx,
    req: PutAccountSettingDefaultRequest,
) -> Result<PutAccountSettingDefaultResponse, ApiError> {
    let root = root_arn(&ctx.scope.account);
    let principal = principal_of(ctx, Some(&root))?;
    let setting = put(ctx, principal, req.name, req.value).await?;
    Ok(PutAccountSettingDefaultResponse { setting: Some(setting) })
}

pub async fn delete_account_setting(
    ctx: &Ctx,
    req: DeleteAccountSettingRequest,
) -> Result<DeleteAccountSettingResponse, ApiError> {
    let principal = principal_of(ctx, req.principal_arn.as_deref())?;
    let name = req.name.as_str();
    ctx.store
        .write(&ctx.scope, move |tx| {
            let Some(setting) = tx.get::<AccountSetting>(&[principal.as_str().into(), name.into()])? else {
                return Err(ApiError::invalid_parameter(format!(
                    "The account setting '{name}' is not set for {principal}."
                )));
            };
            tx.delete::<AccountSetting>(&[principal.as_str().into(), name.into()])?;
            Ok(DeleteAccountSettingResponse {
                setting: Some(shown(&setting, SettingType::User)),
            })
        })
        .await
}

pub async fn list_account_settings(
    ctx: &Ctx,
    req: ListAccountSettingsRequest,
) -> Result<ListAccountSettingsResponse, ApiError> {
    if req.max_results.is_some_and(|n| !(1..=MAX_RESULTS).contains(&n)) {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid 'maxResults': it must be between 1 and {MAX_RESULTS}."
        )));
    }
    let page = Page::new(
        "account-settings",
        Some(req.max_results.unwrap_or(MAX_RESULTS)),
        req.next_token.as_deref(),
    )?;
    let principal = principal_of(ctx, req.principal_arn.as_deref())?;
    let effective_settings = req.effective_settings.unwrap_or(false);
    let name = req.name.map(SettingName::as_str);
    let value = req.value.clone();
    let settings = ctx
        .store
        .read(&ctx.scope, move |tx| {
            let mut out = Vec::new();
            if effective_settings {
                for (n, _, _) in SETTINGS.iter().filter(|(n, _, _)| name.is_none_or(|w| w == *n)) {
                    out.push(effective(tx, &principal, n)?);
                }
            } else {
                let own = tx.list::<AccountSetting>(&[principal.as_str().into()], &[], None, usize::MAX)?;
                out.extend(
                    own.into_iter()
                        .filter(|s| name.is_none_or(|w| w == s.name))
                        .map(|s| (s, SettingType::User)),
                );
            }
            Ok::<_, ApiError>(out)
        })
        .await?;
    let listed: Vec<(AccountSetting, SettingType)> = settings
        .into_iter()
        .filter(|(s, _)| value.as_ref().is_none_or(|v| *v == s.value))
        .filter(|(s, _)| page.after.as_ref().is_none_or(|after| s.name > *after))
        .take(page.fetch())
        .collect();
    let (listed, next_token) = page.finish(listed, |(s, _)| s.name.clone());
    Ok(ListAccountSettingsResponse {
        settings: Some(listed.iter().map(|(s, kind)| shown(s, *kind)).collect()),
        next_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_name_of_the_model_is_listed_once() {
        let model: serde_json::Value =
            serde_json::from_str(include_str!("../../model/ecs.json")).expect("the embedded model");
        let mut names: Vec<&str> = model["shapes"]["SettingName"]["enum"]
            .as_array()
            .expect("an enum")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        let mut listed: Vec<&str> = SETTINGS.iter().map(|(n, _, _)| *n).collect();
        listed.sort_unstable();
        names.sort_unstable();
        assert_eq!(listed, names);
        for (name, default, values) in SETTINGS {
            assert!(values.contains(default), "{name}");
            assert!(parse_name(name).is_some(), "{name}");
        }
    }

    #[test]
    fn values_are_checked_per_setting() {
        assert!(check_value("containerInsights", "enhanced").is_ok());
        assert!(check_value("containerInsights", "on").is_err());
        assert!(check_value("fargateTaskRetirementWaitPeriod", "14").is_ok());
        assert!(check_value("fargateTaskRetirementWaitPeriod", "3").is_err());
        let e = check_value("taskLongArnFormat", "disabled").unwrap_err();
        assert!(e.message.contains("can no longer be turned off"), "{}", e.message);
    }
}
