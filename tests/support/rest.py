"""Test support: TF Serving's REST predict format, for testing an export without a server binary.

``rest_instances_to_inputs`` turns a request body exactly as TF Serving's ``/v1/models/NAME:predict`` accepts it
("instances" row format or "inputs" columnar format, binary values as ``{"b64": "..."}``) into the keyword tensors
of a signature; ``outputs_to_rest_predictions`` formats a signature's outputs as TF Serving's row-format reply.
"""
import base64
import json

import numpy as np
import tensorflow as tf

from mtarcface_tf.export.saved_model import SERVING_SIGNATURE


class RestRequestError(ValueError):
    """A request body TF Serving would reject (the message says what is wrong)."""


def rest_signature_name(body):
    """Returns the ``signature_name`` of a REST body (dict or JSON str), ``serving_default`` when absent."""
    return _as_dict(body).get("signature_name", SERVING_SIGNATURE)


def _as_dict(body):
    if isinstance(body, (str, bytes)):
        try:
            body = json.loads(body)
        except json.JSONDecodeError as error:
            raise RestRequestError(f"request body is not valid JSON: {error}") from error
    if not isinstance(body, dict):
        raise RestRequestError("request body must be a JSON object with 'instances' or 'inputs'.")
    return body


def _decode_binary(value):
    """Replaces every ``{"b64": s}`` in a nested list by the decoded bytes."""
    if isinstance(value, dict):
        if set(value) != {"b64"}:
            raise RestRequestError(f"a binary value must be {{\"b64\": \"...\"}}, got keys {sorted(value)}.")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (ValueError, TypeError) as error:
            raise RestRequestError(f"invalid base64 in a 'b64' value: {error}") from error
    if isinstance(value, list):
        return [_decode_binary(item) for item in value]
    return value


def _to_tensor(value, spec, name):
    value = _decode_binary(value)
    try:
        array = np.array(value, dtype=object if spec.dtype == tf.string else spec.dtype.as_numpy_dtype)
    except (ValueError, TypeError, OverflowError) as error:
        raise RestRequestError(f"input '{name}': cannot convert to {spec.dtype.name}: {error}") from error
    if not spec.shape.is_compatible_with(array.shape):
        raise RestRequestError(f"input '{name}': shape {list(array.shape)} does not match the signature's "
                               f"{spec.shape.as_list()}.")
    return tf.constant(array, dtype=spec.dtype)


def _input_specs(signature):
    specs = signature.structured_input_signature[1]
    if not specs:
        raise RestRequestError("the signature takes no named inputs.")
    return specs


def _rows_to_columns(instances, specs):
    if not isinstance(instances, list) or not instances:
        raise RestRequestError("'instances' must be a non-empty list.")
    names = sorted(specs)
    named = all(isinstance(row, dict) and not (set(row) == {"b64"}) for row in instances)
    if len(names) == 1 and not named:
        return {names[0]: instances}
    if not named:
        raise RestRequestError(f"each instance must be an object with the inputs {names}.")
    columns = {}
    for name in names:
        if any(name not in row for row in instances):
            raise RestRequestError(f"every instance needs the input '{name}'.")
        columns[name] = [row[name] for row in instances]
    return columns


def rest_instances_to_inputs(body, signature):
    """Converts a TF Serving REST predict body into the keyword tensors of ``signature``.

    Args:
      body: dict or JSON string: ``{"instances": [...]}`` (row format; each instance is the single input's value
        or an object of named inputs) or ``{"inputs": ...}`` (columnar format); binary strings as ``{"b64": "..."}``;
        an optional ``signature_name`` is ignored here (pick the signature with ``rest_signature_name``).
      signature: a concrete function from ``tf.saved_model.load(dir).signatures[name]``.

    Returns:
      dict input name -> tf.Tensor with the signature's dtype (e.g. ``images`` uint8 [B, S, S, 3] or string [B]).

    Raises:
      RestRequestError: both or neither of 'instances'/'inputs', unknown or missing inputs, values that do not
        convert to the input's dtype or shape.
    """
    body = _as_dict(body)
    specs = _input_specs(signature)
    if ("instances" in body) == ("inputs" in body):
        raise RestRequestError("the body must have exactly one of 'instances' (row format) or 'inputs' (columnar).")
    if "instances" in body:
        columns = _rows_to_columns(body["instances"], specs)
    elif isinstance(body["inputs"], dict) and set(body["inputs"]) != {"b64"}:
        columns = body["inputs"]
    elif len(specs) == 1:
        columns = {next(iter(specs)): body["inputs"]}
    else:
        raise RestRequestError(f"'inputs' must be an object with the inputs {sorted(specs)}.")
    unknown = set(columns) - set(specs)
    if unknown:
        raise RestRequestError(f"unknown inputs {sorted(unknown)}; the signature takes {sorted(specs)}.")
    missing = set(specs) - set(columns)
    if missing:
        raise RestRequestError(f"missing inputs {sorted(missing)}.")
    return {name: _to_tensor(columns[name], specs[name], name) for name in specs}


def outputs_to_rest_predictions(outputs):
    """Formats signature outputs (dict name -> [B, ...] tensor) as TF Serving's ``{"predictions": [{...}, ...]}``."""
    arrays = {name: np.asarray(value).tolist() for name, value in outputs.items()}
    batch = len(next(iter(arrays.values())))
    return {"predictions": [{name: values[row] for name, values in arrays.items()} for row in range(batch)]}
