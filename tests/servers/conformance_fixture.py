"""The downstream the official conformance suite is run against, through fmos-mcp (`"prefix": false`).

It provides what the suite's server scenarios (@modelcontextprotocol/conformance 0.1.16) expect: the
`test_*` tools, `test://` resources and template, the `test_*` prompts, completions, subscriptions and
logging. It speaks both protocol eras: in the handshake era it asks the client by pushing requests, in the
2026-07-28 era it returns an InputRequiredResult and reads the answer from the retry.
Low-level Server, stdio: `python conformance_fixture.py`.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

warnings.filterwarnings("ignore", category=MCPDeprecationWarning)  # logging and sampling on purpose

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
WAV = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="
NO_ARGS: dict[str, Any] = {"type": "object", "properties": {}}


def _tool(name: str, description: str, schema: dict[str, Any] | None = None) -> types.Tool:
    return types.Tool(name=name, description=description, input_schema=schema or NO_ARGS)


def _required_string(name: str, description: str) -> dict[str, Any]:
    return {"type": "object", "properties": {name: {"type": "string", "description": description}}, "required": [name]}


TOOLS = [
    _tool("test_simple_text", "Returns simple text content"),
    _tool("test_image_content", "Returns an image"),
    _tool("test_audio_content", "Returns audio"),
    _tool("test_embedded_resource", "Returns an embedded resource"),
    _tool("test_multiple_content_types", "Returns text, an image and a resource"),
    _tool("test_tool_with_logging", "Sends three log messages while it runs"),
    _tool("test_tool_with_progress", "Reports progress three times"),
    _tool("test_error_handling", "Always fails with an error result"),
    _tool("test_sampling", "Asks the client's model", _required_string("prompt", "The prompt for the model")),
    _tool("test_elicitation", "Asks the user", _required_string("message", "The message shown to the user")),
    _tool("test_elicitation_sep1034_defaults", "Asks the user with defaults for every primitive type"),
    _tool("test_elicitation_sep1330_enums", "Asks the user with every enum form"),
    _tool("json_schema_2020_12_tool", "Takes arguments described with JSON Schema 2020-12", {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {"address": {"type": "object", "properties": {"street": {"type": "string"}, "city": {"type": "string"}}}},
        "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
        "additionalProperties": False,
    }),
]

CONTACT_FORM = {
    "type": "object",
    "properties": {"username": {"type": "string", "description": "User name"},
                   "email": {"type": "string", "description": "E-mail address"}},
    "required": ["username", "email"],
}
DEFAULTS_FORM = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "default": "John Doe"},
        "age": {"type": "integer", "default": 30},
        "score": {"type": "number", "default": 95.5},
        "status": {"type": "string", "enum": ["active", "inactive", "pending"], "default": "active"},
        "verified": {"type": "boolean", "default": True},
    },
}
ENUMS_FORM = {
    "type": "object",
    "properties": {
        "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
        "titledSingle": {"type": "string", "oneOf": [{"const": f"value{i}", "title": f"Option {i}"} for i in (1, 2, 3)]},
        "legacyEnum": {"type": "string", "enum": ["opt1", "opt2", "opt3"], "enumNames": ["One", "Two", "Three"]},
        "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
        "titledMulti": {"type": "array", "items": {"anyOf": [{"const": f"value{i}", "title": f"Choice {i}"} for i in (1, 2, 3)]}},
    },
}


def text(value: str) -> types.TextContent:
    return types.TextContent(type="text", text=value)


def result(value: str, is_error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=[text(value)], is_error=is_error)


class AskLater(Exception):
    """Modern era: the answer is not here yet; return the question instead."""

    def __init__(self, key: str, request: Any) -> None:
        self.key, self.request = key, request


async def ask(ctx: ServerRequestContext[Any], params: Any, key: str, request: Any, result_type: Any) -> Any:
    """Push the request (handshake era) or take its answer from the retry (modern era)."""
    if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
        answer = (params.input_responses or {}).get(key)
        if answer is None:
            raise AskLater(key, request)
        return answer
    return await ctx.session.send_request(request, result_type)


async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> Any:
    try:
        return await _call(ctx, params)
    except AskLater as later:
        return types.InputRequiredResult(input_requests={later.key: later.request}, request_state=params.name)


async def _call(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> Any:
    name, args = params.name, params.arguments or {}
    if name == "test_simple_text":
        return result("This is a simple text response for testing.")
    if name == "test_image_content":
        return types.CallToolResult(content=[types.ImageContent(type="image", data=PNG, mime_type="image/png")])
    if name == "test_audio_content":
        return types.CallToolResult(content=[types.AudioContent(type="audio", data=WAV, mime_type="audio/wav")])
    if name == "test_embedded_resource":
        return types.CallToolResult(content=[_embedded("test://embedded-resource", "This is an embedded resource content.")])
    if name == "test_multiple_content_types":
        return types.CallToolResult(content=[
            text("Multiple content types test:"),
            types.ImageContent(type="image", data=PNG, mime_type="image/png"),
            _embedded("test://mixed-content-resource", json.dumps({"test": "data", "value": 123})),
        ])
    if name == "test_tool_with_logging":
        for i, message in enumerate(("Tool execution started", "Tool processing data", "Tool execution completed")):
            if i:
                await asyncio.sleep(0.05)
            await ctx.session.send_log_message("info", message, related_request_id=ctx.request_id)
        return result("Tool with logging executed successfully")
    if name == "test_tool_with_progress":
        for i, progress in enumerate((0, 50, 100)):
            if i:
                await asyncio.sleep(0.05)
            await ctx.session.report_progress(progress, 100, f"Completed step {progress} of 100")
        return result("Progress tool completed")
    if name == "test_error_handling":
        return result("This tool intentionally returns an error for testing", is_error=True)
    if name == "test_sampling":
        request = types.CreateMessageRequest(params=types.CreateMessageRequestParams(
            messages=[types.SamplingMessage(role="user", content=text(str(args.get("prompt", ""))))], max_tokens=100,
        ))
        answer = await ask(ctx, params, "sampling", request, types.CreateMessageResult)
        return result(f"LLM response: {getattr(answer.content, 'text', 'No response')}")
    if name == "test_elicitation":
        return await _elicit(ctx, params, str(args.get("message", "")), CONTACT_FORM, "User response")
    if name == "test_elicitation_sep1034_defaults":
        return await _elicit(ctx, params, "Please accept with the defaults", DEFAULTS_FORM, "Elicitation completed")
    if name == "test_elicitation_sep1330_enums":
        return await _elicit(ctx, params, "Please choose from each kind of list", ENUMS_FORM, "Elicitation completed")
    if name == "json_schema_2020_12_tool":
        return result(f"Received: {json.dumps(args)}")
    raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {name}")


async def _elicit(ctx: Any, params: Any, message: str, schema: dict[str, Any], label: str) -> types.CallToolResult:
    request = types.ElicitRequest(params=types.ElicitRequestFormParams(message=message, requested_schema=schema))
    answer = await ask(ctx, params, "elicitation", request, types.ElicitResult)
    return result(f"{label}: action={answer.action}, content={json.dumps(answer.content or {})}")


def _embedded(uri: str, body: str) -> types.EmbeddedResource:
    return types.EmbeddedResource(type="resource", resource=types.TextResourceContents(uri=uri, mime_type="text/plain", text=body))


RESOURCES = [
    types.Resource(uri="test://static-text", name="static-text", description="Static text", mime_type="text/plain"),
    types.Resource(uri="test://static-binary", name="static-binary", description="A PNG", mime_type="image/png"),
    types.Resource(uri="test://watched-resource", name="watched-resource", description="Subscribable", mime_type="text/plain"),
]
TEMPLATES = [types.ResourceTemplate(uri_template="test://template/{id}/data", name="template-data",
                                    description="A template", mime_type="application/json")]


async def read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
    uri = str(params.uri)
    if uri == "test://static-text":
        contents: Any = types.TextResourceContents(uri=uri, mime_type="text/plain",
                                                   text="This is the content of the static text resource.")
    elif uri == "test://static-binary":
        contents = types.BlobResourceContents(uri=uri, mime_type="image/png", blob=PNG)
    elif uri == "test://watched-resource":
        contents = types.TextResourceContents(uri=uri, mime_type="text/plain", text="Watched resource content")
    elif uri.startswith("test://template/") and uri.endswith("/data"):
        ident = uri[len("test://template/") : -len("/data")]
        body = json.dumps({"id": ident, "templateTest": True, "data": f"Data for ID: {ident}"})
        contents = types.TextResourceContents(uri=uri, mime_type="application/json", text=body)
    else:
        raise MCPError(code=types.INVALID_PARAMS, message=f"Resource not found: {uri}")
    return types.ReadResourceResult(contents=[contents])


PROMPTS = [
    types.Prompt(name="test_simple_prompt", description="A prompt without arguments"),
    types.Prompt(name="test_prompt_with_arguments", description="A prompt with arguments", arguments=[
        types.PromptArgument(name="arg1", description="First argument", required=True),
        types.PromptArgument(name="arg2", description="Second argument", required=True),
    ]),
    types.Prompt(name="test_prompt_with_embedded_resource", description="A prompt with a resource", arguments=[
        types.PromptArgument(name="resourceUri", description="The resource to embed", required=True),
    ]),
    types.Prompt(name="test_prompt_with_image", description="A prompt with an image"),
]


async def get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
    a = params.arguments or {}

    def user(content: Any) -> types.PromptMessage:
        return types.PromptMessage(role="user", content=content)

    messages = {
        "test_simple_prompt": lambda: [user(text("This is a simple prompt for testing."))],
        "test_prompt_with_arguments": lambda: [user(text(f"Prompt with arguments: arg1='{a.get('arg1')}', arg2='{a.get('arg2')}'"))],
        "test_prompt_with_embedded_resource": lambda: [
            user(_embedded(a.get("resourceUri", "test://example-resource"), "Embedded resource content for testing.")),
            user(text("Please process the embedded resource above.")),
        ],
        "test_prompt_with_image": lambda: [
            user(types.ImageContent(type="image", data=PNG, mime_type="image/png")),
            user(text("Please analyze the image above.")),
        ],
    }.get(params.name)
    if messages is None:
        raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown prompt: {params.name}")
    return types.GetPromptResult(messages=messages())


async def complete(ctx: Any, params: types.CompleteRequestParams) -> types.CompleteResult:
    values = ["test", "test-value"] if params.argument.value.startswith("t") else []
    return types.CompleteResult(completion=types.Completion(values=values, total=len(values), has_more=False))


async def noop(ctx: Any, params: Any) -> types.EmptyResult:
    return types.EmptyResult()


def build() -> Server[Any]:
    async def listing(kind: str, items: list[Any]) -> Any:
        return {"tools": types.ListToolsResult, "prompts": types.ListPromptsResult, "resources": types.ListResourcesResult,
                "resource_templates": types.ListResourceTemplatesResult}[kind](**{kind: items})

    return Server(
        "conformance-fixture",
        version="1.0.0",
        on_list_tools=lambda ctx, p: listing("tools", TOOLS),
        on_call_tool=call_tool,
        on_list_resources=lambda ctx, p: listing("resources", RESOURCES),
        on_list_resource_templates=lambda ctx, p: listing("resource_templates", TEMPLATES),
        on_read_resource=read_resource,
        on_subscribe_resource=noop,
        on_unsubscribe_resource=noop,
        on_subscriptions_listen=ListenHandler(InMemorySubscriptionBus()),
        on_list_prompts=lambda ctx, p: listing("prompts", PROMPTS),
        on_get_prompt=get_prompt,
        on_completion=complete,
        on_set_logging_level=noop,
    )


async def main() -> None:
    server = build()
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
