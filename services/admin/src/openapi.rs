//! The OpenAPI 3.1 document of the admin API, built from [`crate::ROUTES`].

use crate::ROUTES;
use serde_json::{Map, Value, json};

fn schema(name: &str) -> Value {
    match name {
        "tenant" => json!({
            "type": "object", "additionalProperties": false,
            "properties": {
                "name": {"type": "string"},
                "principal_place_of_business": {"type": "string", "description": "ISO 3166 country of the licensee"},
                "default_country": {"type": ["string", "null"], "description": "country assumed for users herd cannot place"},
                "packs": {"type": "array", "items": {"type": "string"}},
                "overrides": {"type": "object", "additionalProperties": {"enum": ["enforce", "shadow", "off"]}, "description": "\"pack/rule-id\" → mode"},
                "meta_license_granted": {"type": "boolean", "description": "Meta granted the license needed above 700M monthly active users"},
                "attest_mau": {"type": "boolean", "description": "record now that the tenant attests its MAU position"},
                "multimodal": {"type": "boolean"},
                "moderation": {"enum": ["builtin", "guard", "builtin_then_guard", null], "description": "which classifier decides; null: the guard model when one is loaded, else the built-in one"}
            }
        }),
        "channel" => json!({
            "type": "object", "additionalProperties": false,
            "properties": {
                "platform": {"enum": ["whatsapp", "messenger", "instagram"]},
                "external_id": {"type": "string", "description": "phone_number_id, Page id or Instagram account id"},
                "app_secret": {"type": "string", "writeOnly": true},
                "verify_token": {"type": "string", "writeOnly": true},
                "access_token": {"type": "string", "writeOnly": true}
            }
        }),
        "pack_source" => {
            json!({"type": "object", "required": ["source"], "properties": {"source": {"type": "string", "description": "the pack's TOML"}}})
        }
        "dry_run" => json!({
            "type": "object", "required": ["tenant_id", "text"],
            "properties": {
                "tenant_id": {"type": "integer"}, "text": {"type": "string"},
                "platform": {"enum": ["whatsapp", "messenger", "instagram"]}, "sender": {"type": "string", "description": "wa_id (a phone number places the user)"},
                "has_image": {"type": "boolean"}, "monthly_active_users": {"type": "integer"}
            }
        }),
        "key" => {
            json!({"type": "object", "required": ["name", "role"], "properties": {"name": {"type": "string"}, "role": {"enum": ["admin", "analyst"]}}})
        }
        "delete_user" => json!({
            "type": "object", "required": ["platform", "external_id"],
            "properties": {"platform": {"enum": ["whatsapp", "messenger", "instagram"]}, "external_id": {"type": "string"}, "tenant_id": {"type": "integer"}}
        }),
        _ => json!({"type": "object"}),
    }
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in ROUTES {
        let path = format!("/admin/v1{}", r.path);
        let mut params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": if p == "name" { "string" } else { "integer" }}}))
            .collect();
        params.extend(
            r.query
                .iter()
                .map(|(n, d)| json!({"name": n, "in": "query", "required": false, "description": d, "schema": {"type": "string"}})),
        );
        let mut op = json!({
            "summary": r.summary,
            "operationId": format!("{}{}", r.method, r.path.replace(['/', '{', '}', '-'], "_")),
            "x-herd-role": r.role.as_str(),
            "parameters": params,
            "responses": {
                "200": {"description": "success (201 for creations, 204 for deletions)"},
                "401": {"description": "missing, unknown or revoked key", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "403": {"description": format!("the key's role is below {}", r.role.as_str()), "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "422": {"description": "invalid input; `field` names it", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "429": {"description": "rate limited"}
            }
        });
        if let Some(b) = r.body {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": schema(b)}}});
        }
        let entry = paths.entry(path).or_insert_with(|| json!({}));
        entry[r.method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "herd admin API", "version": env!("CARGO_PKG_VERSION")},
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "an API key from `herd admin create-key`"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}, "field": {"type": "string"}, "line": {"type": "integer"}}}}
        },
        "paths": paths
    })
}
