//! Tenants, channels, policy packs, the audit log, API keys and user data deletion.

use crate::AppState;
use crate::auth::Caller;
use crate::body::Body;
use crate::error::{ApiError, ApiResult};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use herd_policies::{Pack, PolicySet, Subject, Tenant};
use herd_store::admin::{AuditFilter, ChannelFields, TenantFields, TenantRow};
use serde_json::{Value, json};
use std::collections::HashMap;

// ---- tenants

/// A stored tenant's policy settings as herd-policies reads them; errors name the field.
fn policy_tenant(t: &TenantRow) -> Result<Tenant, (String, String)> {
    Tenant::from_parts(
        &t.name,
        &t.principal_place_of_business,
        t.default_country.as_deref(),
        &t.packs,
        &t.overrides,
        t.meta_license_granted,
        t.multimodal,
        t.moderation.as_deref(),
    )
}

fn tenant_fields(b: &Body, current: Option<&TenantRow>) -> ApiResult<TenantFields> {
    let cur_str = |f: fn(&TenantRow) -> String| current.map(f);
    let name = match b.opt_str("name")? {
        Some(n) if !n.trim().is_empty() => n,
        Some(_) => return Err(ApiError::invalid("name", "must not be empty")),
        None => cur_str(|t| t.name.clone()).ok_or_else(|| ApiError::invalid("name", "is required"))?,
    };
    let place = match b.opt_str("principal_place_of_business")? {
        Some(p) => p,
        None => cur_str(|t| t.principal_place_of_business.clone())
            .ok_or_else(|| ApiError::invalid("principal_place_of_business", "is required (ISO country code of the licensee)"))?,
    };
    let default_country =
        if b.has("default_country") { b.opt_str("default_country")? } else { current.and_then(|t| t.default_country.clone()) };
    let packs = match b.str_list("packs")? {
        Some(p) => p,
        None => current
            .map(|t| t.packs.clone())
            .unwrap_or_else(|| vec!["llama4-license".into(), "meta-ai-rollout".into(), "balanced-moderation".into()]),
    };
    let overrides = b.str_map("overrides")?.or_else(|| current.map(|t| t.overrides.clone())).unwrap_or_default();
    Ok(TenantFields {
        name,
        principal_place_of_business: place,
        default_country,
        packs,
        overrides,
        meta_license_granted: b.bool_or("meta_license_granted", current.is_some_and(|t| t.meta_license_granted))?,
        attest_mau: b.bool_or("attest_mau", false)?,
        multimodal: b.bool_or("multimodal", current.is_some_and(|t| t.multimodal))?,
        moderation: if b.has("moderation") { b.opt_str("moderation")? } else { current.and_then(|t| t.moderation.clone()) },
    })
}

const TENANT_KEYS: &[&str] = &[
    "name",
    "principal_place_of_business",
    "default_country",
    "packs",
    "overrides",
    "meta_license_granted",
    "attest_mau",
    "multimodal",
    "moderation",
];

/// Checks a tenant's settings against the packs that are active now.
async fn check_tenant(st: &AppState, t: &TenantFields) -> ApiResult<()> {
    let tenant = Tenant::from_parts(
        &t.name,
        &t.principal_place_of_business,
        t.default_country.as_deref(),
        &t.packs,
        &t.overrides,
        t.meta_license_granted,
        t.multimodal,
        t.moderation.as_deref(),
    )
    .map_err(|(f, e)| ApiError::invalid(f, e))?;
    if let Some(m) = tenant.moderation.filter(|m| m.needs_guard() && !st.guard_model) {
        return Err(ApiError::invalid("moderation", format!("{:?} needs a guard model, and policies.guard_model is not set", m.as_str())));
    }
    let set = active_set(st, None).await?;
    // This process holds no guard model; whether one is loaded was checked above.
    let packs_only = Tenant { moderation: None, ..tenant.clone() };
    set.check_tenant(&packs_only).map_err(|e| ApiError::invalid(if e.contains("override") { "overrides" } else { "packs" }, e))?;
    if tenant.multimodal {
        set.may_activate_multimodal(&tenant).map_err(|e| ApiError::invalid("multimodal", e))?;
    }
    Ok(())
}

pub async fn list_tenants(State(st): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(Json(json!(st.store.tenant_rows().await?)))
}

pub async fn get_tenant(State(st): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Value>> {
    let t = st.store.tenant_row(id).await?.ok_or_else(|| ApiError::not_found(format!("no tenant {id}")))?;
    Ok(Json(json!(t)))
}

pub async fn create_tenant(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let b = Body::parse(&body)?.only(TENANT_KEYS)?;
    let t = tenant_fields(&b, None)?;
    check_tenant(&st, &t).await?;
    let row =
        st.store.create_tenant(&c.actor(), &t).await?.ok_or_else(|| ApiError::conflict(format!("a tenant named {:?} exists", t.name)))?;
    Ok((StatusCode::CREATED, Json(json!(row))))
}

pub async fn update_tenant(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<i64>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let b = Body::parse(&body)?.only(TENANT_KEYS)?;
    let cur = st.store.tenant_row(id).await?.ok_or_else(|| ApiError::not_found(format!("no tenant {id}")))?;
    let t = tenant_fields(&b, Some(&cur))?;
    check_tenant(&st, &t).await?;
    let row = st.store.update_tenant(&c.actor(), id, &t).await.map_err(|e| match &e {
        herd_store::Error::Db(sqlx::Error::Database(d)) if d.is_unique_violation() => {
            ApiError::conflict(format!("a tenant named {:?} exists", t.name))
        }
        _ => e.into(),
    })?;
    Ok(Json(json!(row.ok_or_else(|| ApiError::not_found(format!("no tenant {id}")))?)))
}

pub async fn delete_tenant(State(st): State<AppState>, Extension(c): Extension<Caller>, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    if st.store.delete_tenant(&c.actor(), id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no tenant {id}")))
    }
}

// ---- channels

const CHANNEL_KEYS: &[&str] = &["platform", "external_id", "app_secret", "verify_token", "access_token"];

fn channel_fields(b: &Body, creating: bool, cur: Option<&herd_store::admin::ChannelView>) -> ApiResult<ChannelFields> {
    let platform = match b.opt_str("platform")? {
        Some(p) => p,
        None => cur.map(|c| c.platform.clone()).ok_or_else(|| ApiError::invalid("platform", "is required"))?,
    };
    if herd_core::Platform::parse(&platform).is_none() {
        return Err(ApiError::invalid("platform", format!("must be whatsapp, messenger or instagram, got {platform:?}")));
    }
    let external_id = match b.opt_str("external_id")? {
        Some(e) if !e.trim().is_empty() => e,
        Some(_) => return Err(ApiError::invalid("external_id", "must not be empty")),
        None => cur.map(|c| c.external_id.clone()).ok_or_else(|| ApiError::invalid("external_id", "is required"))?,
    };
    let secret = |f: &str| -> ApiResult<Option<String>> {
        match b.opt_str(f)? {
            Some(s) if s.is_empty() => Err(ApiError::invalid(f, "must not be empty")),
            Some(s) => Ok(Some(s)),
            None if creating => Err(ApiError::invalid(f, "is required")),
            None => Ok(None),
        }
    };
    Ok(ChannelFields {
        platform,
        external_id,
        app_secret: secret("app_secret")?,
        verify_token: secret("verify_token")?,
        access_token: secret("access_token")?,
    })
}

pub async fn list_channels(State(st): State<AppState>, Path(tenant): Path<i64>) -> ApiResult<Json<Value>> {
    Ok(Json(json!(st.store.channel_views(Some(tenant)).await?)))
}

pub async fn create_channel(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(tenant): Path<i64>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let b = Body::parse(&body)?.only(CHANNEL_KEYS)?;
    let f = channel_fields(&b, true, None)?;
    if st.store.tenant_row(tenant).await?.is_none() {
        return Err(ApiError::not_found(format!("no tenant {tenant}")));
    }
    let v = st
        .store
        .create_channel(&c.actor(), tenant, &f)
        .await?
        .ok_or_else(|| ApiError::conflict(format!("{} {} is another channel's", f.platform, f.external_id)))?;
    Ok((StatusCode::CREATED, Json(json!(v))))
}

pub async fn update_channel(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(id): Path<i64>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let b = Body::parse(&body)?.only(CHANNEL_KEYS)?;
    let cur = st
        .store
        .channel_views(None)
        .await?
        .into_iter()
        .find(|v| v.id == id)
        .ok_or_else(|| ApiError::not_found(format!("no channel {id}")))?;
    let f = channel_fields(&b, false, Some(&cur))?;
    let v = st.store.update_channel(&c.actor(), id, &f).await.map_err(|e| match &e {
        herd_store::Error::Db(sqlx::Error::Database(d)) if d.is_unique_violation() => {
            ApiError::conflict(format!("{} {} is another channel's", f.platform, f.external_id))
        }
        _ => e.into(),
    })?;
    Ok(Json(json!(v.ok_or_else(|| ApiError::not_found(format!("no channel {id}")))?)))
}

pub async fn delete_channel(State(st): State<AppState>, Extension(c): Extension<Caller>, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    if st.store.delete_channel(&c.actor(), id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no channel {id}")))
    }
}

// ---- policy packs

/// The active packs, with `candidate` (name, TOML) in place of its pack's active version.
async fn active_set(st: &AppState, candidate: Option<(&str, &str)>) -> ApiResult<PolicySet> {
    let mut files: Vec<(String, String)> = st
        .store
        .active_pack_sources()
        .await?
        .into_iter()
        .filter(|(n, _, _)| candidate.is_none_or(|(c, _)| c != n))
        .map(|(n, v, s)| (format!("{n}@{v}"), s))
        .collect();
    if let Some((n, s)) = candidate {
        files.push((format!("{n} (candidate)"), s.to_string()));
    }
    PolicySet::from_sources(files.iter().map(|(f, s)| (f.as_str(), s.as_str())))
        .map_err(|e| ApiError { line: Some(e.line), ..ApiError::invalid(e.field, e.message) })
}

fn parse_pack(src: &str, expect_name: Option<&str>) -> ApiResult<Pack> {
    let p = Pack::parse(src, "pack").map_err(|e| ApiError { line: Some(e.line), ..ApiError::invalid(e.field, e.message) })?;
    if let Some(n) = expect_name.filter(|n| *n != p.meta.name) {
        return Err(ApiError::invalid("pack.name", format!("the pack is named {:?}, not {n:?}", p.meta.name)));
    }
    Ok(p)
}

pub async fn list_packs(State(st): State<AppState>) -> ApiResult<Json<Value>> {
    let mut packs: Vec<(String, Option<i32>, Vec<Value>)> = vec![];
    for v in st.store.pack_versions(None).await? {
        if packs.last().is_none_or(|p| p.0 != v.name) {
            packs.push((v.name.clone(), None, vec![]));
        }
        let p = packs.last_mut().expect("pushed");
        if v.active {
            p.1 = Some(v.version);
        }
        p.2.push(json!({ "version": v.version, "created_at": v.created_at, "created_by": v.created_by, "active": v.active }));
    }
    Ok(Json(json!(packs.into_iter().map(|(n, a, v)| json!({ "name": n, "active_version": a, "versions": v })).collect::<Vec<_>>())))
}

pub async fn get_pack_version(State(st): State<AppState>, Path((name, version)): Path<(String, i32)>) -> ApiResult<Json<Value>> {
    let src =
        st.store.pack_source(&name, version).await?.ok_or_else(|| ApiError::not_found(format!("no version {version} of pack {name:?}")))?;
    let active = st.store.active_pack_version(&name).await? == Some(version);
    Ok(Json(json!({ "name": name, "version": version, "active": active, "source": src })))
}

/// `{"source": "..."}` → the TOML.
fn source_of(body: &[u8]) -> ApiResult<String> {
    Body::parse(body)?.only(&["source"])?.str("source")
}

pub async fn validate_pack(State(st): State<AppState>, body: Bytes) -> ApiResult<Json<Value>> {
    let src = source_of(&body)?;
    let checked = match parse_pack(&src, None) {
        Ok(p) => active_set(&st, Some((&p.meta.name, &src))).await.map(|_| p),
        Err(e) => Err(e),
    };
    Ok(Json(match checked {
        Ok(p) => json!({ "valid": true, "name": p.meta.name, "version": p.meta.version }),
        Err(e) if e.status == StatusCode::UNPROCESSABLE_ENTITY => {
            json!({ "valid": false, "error": { "field": e.field, "line": e.line, "message": e.message } })
        }
        Err(e) => return Err(e),
    }))
}

pub async fn upload_pack(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let src = source_of(&body)?;
    let p = parse_pack(&src, Some(&name))?;
    active_set(&st, Some((&name, &src))).await?;
    let version = i32::try_from(p.meta.version).map_err(|_| ApiError::invalid("pack.version", "is too large"))?;
    if !st.store.insert_pack_version(&c.actor(), &name, version, &src).await? {
        return Err(ApiError::conflict(format!("version {version} of {name:?} is stored already; raise `pack.version`")));
    }
    Ok((StatusCode::CREATED, Json(json!({ "name": name, "version": version }))))
}

/// Evaluates a message against a stored (possibly inactive) version, activating nothing.
pub async fn dry_run(State(st): State<AppState>, Path((name, version)): Path<(String, i32)>, body: Bytes) -> ApiResult<Json<Value>> {
    let b = Body::parse(&body)?.only(&["tenant_id", "text", "platform", "sender", "has_image", "monthly_active_users"])?;
    let tenant_id = b.opt_i64("tenant_id")?.ok_or_else(|| ApiError::invalid("tenant_id", "is required"))?;
    let text = b.str("text")?;
    let has_image = b.bool_or("has_image", false)?;
    let mau = b
        .opt_i64("monthly_active_users")?
        .map(|n| u64::try_from(n).map_err(|_| ApiError::invalid("monthly_active_users", "must not be negative")))
        .transpose()?;
    let src =
        st.store.pack_source(&name, version).await?.ok_or_else(|| ApiError::not_found(format!("no version {version} of pack {name:?}")))?;
    let set = active_set(&st, Some((&name, &src))).await?;
    let row = st.store.tenant_row(tenant_id).await?.ok_or_else(|| ApiError::invalid("tenant_id", format!("no tenant {tenant_id}")))?;
    let tenant = policy_tenant(&row).map_err(|(f, e)| ApiError::invalid(format!("tenant.{f}"), e))?;
    let platform = b.opt_str("platform")?.unwrap_or_else(|| "whatsapp".into());
    if herd_core::Platform::parse(&platform).is_none() {
        return Err(ApiError::invalid("platform", format!("must be whatsapp, messenger or instagram, got {platform:?}")));
    }
    let sender = b.opt_str("sender")?.unwrap_or_default();
    let phone = (platform == "whatsapp" && !sender.is_empty() && sender.chars().all(|c| c.is_ascii_digit())).then_some(sender.as_str());
    let subject = Subject {
        text: &text,
        phone,
        platform: Some(&platform),
        locale: None,
        has_image,
        monthly_active_users: mau,
        new_user: true,
        reply_to: None,
    };
    let d = set.evaluate(&tenant, &subject);
    Ok(Json(json!({
        "pack": name, "version": version, "tenant_id": tenant_id,
        "action": d.action.as_str(), "message": d.message, "system_prompt": d.system_prompt, "country": d.country,
        "categories": d.categories, "rules": d.rules, "hits": d.hits, "classifier": d.classifier,
    })))
}

pub async fn activate_pack(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path((name, version)): Path<(String, i32)>,
) -> ApiResult<Json<Value>> {
    let src =
        st.store.pack_source(&name, version).await?.ok_or_else(|| ApiError::not_found(format!("no version {version} of pack {name:?}")))?;
    // Every tenant must still build with this version in place.
    let set = active_set(&st, Some((&name, &src))).await?;
    for t in st.store.tenant_rows().await? {
        if let Ok(tenant) = policy_tenant(&t) {
            set.check_tenant(&tenant).map_err(|e| ApiError::invalid("version", format!("tenant {:?} would not build: {e}", t.name)))?;
        }
    }
    st.store.activate_pack(&c.actor(), &name, version, "activate").await?;
    Ok(Json(json!({ "name": name, "version": version })))
}

pub async fn rollback_pack(
    State(st): State<AppState>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let prev = st
        .store
        .previous_pack_version(&name)
        .await?
        .ok_or_else(|| ApiError::conflict(format!("pack {name:?} has no earlier active version")))?;
    st.store.activate_pack(&c.actor(), &name, prev, "rollback").await?;
    Ok(Json(json!({ "name": name, "version": prev })))
}

// ---- audit, keys, privacy

pub async fn audit(State(st): State<AppState>, Query(q): Query<HashMap<String, String>>) -> ApiResult<Json<Value>> {
    let date = |k: &str| -> ApiResult<Option<chrono::DateTime<chrono::Utc>>> {
        q.get(k)
            .map(|v| {
                chrono::DateTime::parse_from_rfc3339(v)
                    .map(|d| d.with_timezone(&chrono::Utc))
                    .or_else(|_| crate::analytics::day(v, k).map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc()))
                    .map_err(|_| ApiError::invalid(k, format!("must be an RFC 3339 time or YYYY-MM-DD, got {v:?}")))
            })
            .transpose()
    };
    let num = |k: &str| -> ApiResult<Option<i64>> {
        q.get(k).map(|v| v.parse().map_err(|_| ApiError::invalid(k, format!("must be an integer, got {v:?}")))).transpose()
    };
    let f = AuditFilter {
        target_type: q.get("target_type").cloned(),
        target_id: q.get("target_id").cloned(),
        actor_key_id: num("actor_key_id")?,
        action: q.get("action").cloned(),
        since: date("since")?,
        until: date("until")?,
        limit: num("limit")?.unwrap_or(100),
    };
    Ok(Json(json!(st.store.audit_entries(&f).await?)))
}

pub async fn list_keys(State(st): State<AppState>) -> ApiResult<Json<Value>> {
    Ok(Json(json!(st.store.api_keys().await?)))
}

pub async fn create_key(State(st): State<AppState>, Extension(c): Extension<Caller>, body: Bytes) -> ApiResult<(StatusCode, Json<Value>)> {
    let b = Body::parse(&body)?.only(&["name", "role"])?;
    let name = b.str("name")?;
    let role_s = b.str("role")?;
    let role =
        crate::auth::Role::parse(&role_s).ok_or_else(|| ApiError::invalid("role", format!("must be admin or analyst, got {role_s:?}")))?;
    let (id, key) = crate::auth::create_key(&st.store, &c.actor(), &name, role)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    tracing::info!(by = c.key_id, id, role = role.as_str(), "API key created");
    Ok((StatusCode::CREATED, Json(json!({ "id": id, "name": name, "role": role.as_str(), "key": key }))))
}

pub async fn revoke_key(State(st): State<AppState>, Extension(c): Extension<Caller>, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    if st.store.revoke_api_key(&c.actor(), id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no live key {id}")))
    }
}

/// Deletes everything stored about one platform user (a privacy request).
pub async fn delete_user(State(st): State<AppState>, Extension(c): Extension<Caller>, body: Bytes) -> ApiResult<Json<Value>> {
    let b = Body::parse(&body)?.only(&["platform", "external_id", "tenant_id"])?;
    let platform = b.str("platform")?;
    if herd_core::Platform::parse(&platform).is_none() {
        return Err(ApiError::invalid("platform", format!("must be whatsapp, messenger or instagram, got {platform:?}")));
    }
    let external_id = b.str("external_id")?;
    let tenant_id = b.opt_i64("tenant_id")?;
    // PostgreSQL first: the erasure it records cancels turns in flight, including any whose
    // stream entry arrives after the Redis clean-up below.
    let e = st.store.delete_user_data(&c.actor(), tenant_id, &platform, &external_id).await?;
    let f = st.queue.forget_user(&platform, &external_id, &e.conversations, &e.message_ids, &e.tenants).await.map_err(|e| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("Redis: {e} (PostgreSQL is erased; call again to finish Redis)"))
    })?;
    Ok(Json(json!({
        "database": e.deleted,
        "redis_keys": f.keys,
        "stream_entries": f.stream_entries,
        "note": "turns of this user in flight are cancelled and never write again; active-user counters are HyperLogLog sketches: they hold no identifier that could be read back or removed",
    })))
}
