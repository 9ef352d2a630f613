"""Schemathesis hooks for the schema fuzz run (loaded through ``SCHEMATHESIS_HOOKS``).

The schema states every bound the server has, but not what no JSON schema can say: whether bytes
are a decodable image, whether a layer or label exists in the chosen model, whether a method
applies to it, or that an option given both in the query and the body must agree. A request that
is valid by the schema may be refused only for one of those reasons, with its documented code.
"""

from __future__ import annotations

import schemathesis

BEYOND_THE_SCHEMA = {
    400: {"invalid_image", "invalid_base64", "extreme_aspect_ratio", "no_images"},
    404: {"unknown_layer", "unknown_label"},
    413: {"image_too_large"},
    422: {
        "conflicting_option",
        "method_not_applicable",
        "layer_not_spatial",
        "ambiguous_layer",
        "ambiguous_label",
        "target_out_of_range",
        "layer_required",
        "invalid_option",  # top_k beyond the chosen model's classes, a layer for guided_backprop
    },
}


@schemathesis.check
def refused_only_for_what_the_schema_cannot_say(ctx, response, case) -> None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code < 400:
        return
    try:
        code = response.json()["error"]["code"]
    except Exception as error:  # not the error body: that is a finding too
        raise AssertionError(f"{response.status_code} without the JSON error body") from error
    allowed = BEYOND_THE_SCHEMA.get(response.status_code, set())
    if code == "too_many_layers" and any("," in item for item in _query_list(case, "layers")):
        return  # comma-separated layers count one by one; a schema counts query items
    if code not in allowed:
        raise AssertionError(
            f"a request valid by the schema was refused with {response.status_code} {code}: "
            f"{response.text[:300]}"
        )
    # Query parameters cannot depend on each other in OpenAPI: a layer with a method that takes none.
    beyond = ("top_k", "takes no layer")
    if code == "invalid_option" and not any(reason in response.text for reason in beyond):
        raise AssertionError(f"invalid_option for a schema-valid request: {response.text[:300]}")


def _query_list(case, name: str) -> list[str]:
    value = (case.query or {}).get(name, [])
    return [str(item) for item in (value if isinstance(value, list) else [value])]
