import {
    LlamaText, SpecialToken, SpecialTokensText,
    type ChatHistoryItem, type ChatModelFunctionCall, type ChatModelFunctions, type ChatWrapper, type Llama, type LlamaModel, type Token
} from 'node-llama-cpp';
import {InferenceError} from '../../core/inference-error.js';
import type {ChatMessage, ToolCalling, ToolDefinition} from '../../core/inference-types.js';
import {toolCallGrammar, type ToolCallSyntax} from '../../core/tool-calls/tool-call-syntax.js';
import type {ToolCallRules} from './generation.js';

/**
 * Tool calling through the model's own chat template, as node-llama-cpp's chat wrapper reads it
 * (docs/architecture.md, "Tool calling").
 */

type WrapperText = string | LlamaText;

/** A chat wrapper's text as plain text; undefined when it holds a special token that has no text (EOS). */
function plainText(value: WrapperText | undefined): string | undefined {
    const text = LlamaText(value ?? '');
    if (text.values.some((part) => part instanceof SpecialToken))
        return undefined;
    return text.values.map((part) => typeof part === 'string' ? part : (part as {value: string}).value).join('');
}

/** How the model writes calls, as its template says; undefined when the template writes them in a way text cannot. */
export function toolCallSyntaxOf(chatWrapper: ChatWrapper): ToolCallSyntax | undefined {
    const functions = chatWrapper.settings.functions;
    const parallel = functions.parallelism?.call;
    const sectionPrefix = plainText(parallel?.sectionPrefix);
    const prefix = plainText(functions.call.prefix);
    const paramsPrefix = plainText(functions.call.paramsPrefix);
    const suffix = plainText(functions.call.suffix);
    const between = parallel === undefined ? '' : plainText(parallel.betweenCalls);
    if (sectionPrefix === undefined || prefix === undefined || paramsPrefix === undefined || suffix === undefined || between === undefined)
        return undefined;
    return {open: sectionPrefix + prefix, paramsPrefix, suffix, ...(parallel !== undefined && {next: between + prefix})};
}

/**
 * `open` as the model writes it: its tag as the one token it is, then the text after it. Tokenized in one piece,
 * a SentencePiece tokenizer would put a space after the tag, which the model does not write itself.
 */
export function tokensOfOpen(model: LlamaModel, open: string): Token[] {
    const tokens = LlamaText(new SpecialTokensText(open)).tokenize(model.tokenizer, 'trimLeadingSpace');
    const first = tokens[0]!;
    const attributes = model.getTokenAttributes(first);
    const tag = model.detokenize([first], true);
    if (!(attributes.control || attributes.userDefined) || !open.startsWith(tag) || tag.length === open.length)
        return tokens;
    const text = open.slice(tag.length);
    const rest = model.tokenize(text, false, 'trimLeadingSpace');
    // node-llama-cpp leaves SentencePiece's space token before a text that starts with a newline.
    const letter = model.tokenize('a', false, 'trimLeadingSpace');
    if (!text.startsWith(' ') && rest.length > 0 && model.detokenize([rest[0]!], false, letter) === ' ')
        rest.shift();
    return [first, ...rest];
}

/**
 * What shows the model starting a call: the tag that opens one (a control token is matched as a token, a text tag
 * as text), or the whole opening text when it starts with no tag.
 */
function callTrigger(model: LlamaModel, openTokens: Token[], open: string): {callTexts: string[], callTokens: Token[][]} {
    const first = openTokens[0]!;
    const attributes = model.getTokenAttributes(first);
    if (attributes.control)
        return {callTexts: [], callTokens: [[first]]};
    if (attributes.userDefined)
        return {callTexts: [model.detokenize([first], true)], callTokens: []};
    return {callTexts: [open], callTokens: []};
}

export interface ToolCallSetup {
    rules: ToolCallRules,
    /** For TokenRelease: what starts a call when the model may choose to. */
    callTexts: string[],
    callTokens: Token[][]
}

/**
 * The rules a request's calls follow, or undefined when it offers no tools (or `tool_choice: none`). A continuation
 * that holds a call (calls are sent whole, so it holds only whole ones) resumes after it.
 */
export async function toolCallSetup(llama: Llama, model: LlamaModel, chatWrapper: ChatWrapper, calling: ToolCalling | undefined,
    continuation: Token[]): Promise<ToolCallSetup | undefined> {
    if (calling === undefined || calling.choice === 'none')
        return undefined;
    const syntax = toolCallSyntaxOf(chatWrapper);
    if (syntax === undefined)
        throw InferenceError.invalidRequest('this model\'s chat template writes tool calls in a way strongdoge cannot hold to a grammar', 'tools');
    const chosen = typeof calling.choice === 'object' ? (choice: {name: string}) => calling.tools.filter((tool) => tool.name === choice.name) : undefined;
    const tools: ToolDefinition[] = chosen?.(calling.choice as {name: string}) ?? calling.tools;
    // A named function is called once; `required` and `auto` follow parallel_tool_calls.
    const parallel = calling.parallel && typeof calling.choice !== 'object';
    const openTokens = tokensOfOpen(model, syntax.open);
    const trigger = callTrigger(model, openTokens, syntax.open);
    const grammar = async (text: string | undefined) => text === undefined ? undefined : llama.createGrammar({grammar: text});
    const resumed = continuationHoldsCall(model, continuation, trigger);
    const rules: ToolCallRules = {
        syntax,
        names: tools.map((tool) => tool.name),
        openTokens,
        grammar: (await grammar(toolCallGrammar(syntax, tools, {parallel})))!,
        forced: calling.choice !== 'auto',
        ...(resumed && {resumedAfterCalls: {grammar: await grammar(toolCallGrammar(syntax, tools, {parallel, afterCalls: true}))}}),
        detokenize: (tokens, context) => model.detokenize(tokens, false, context),
        tokenize: (text) => model.tokenize(text, false, 'trimLeadingSpace')
    };
    return {rules, ...(calling.choice === 'auto' ? trigger : {callTexts: [], callTokens: []})};
}

function continuationHoldsCall(model: LlamaModel, continuation: Token[], trigger: {callTexts: string[], callTokens: Token[][]}) {
    if (continuation.length === 0)
        return false;
    if (trigger.callTokens.some((tokens) => continuation.includes(tokens[0]!)))
        return true;
    const text = model.detokenize(continuation, false);
    return trigger.callTexts.some((callText) => text.includes(callText));
}

/** The tools as the template lists them. */
export function availableFunctions(calling: ToolCalling | undefined): ChatModelFunctions | undefined {
    if (calling === undefined || calling.choice === 'none')
        return undefined;
    return Object.fromEntries(calling.tools.map((tool) => [tool.name, {
        ...(tool.description !== undefined && {description: tool.description}),
        ...(tool.parameters !== undefined && {params: tool.parameters as ChatModelFunctions[string]['params']})
    }]));
}

/** Tool results as the template shows them: JSON when they are JSON, else the text. */
function toolResult(content: string | undefined): unknown {
    if (content === undefined)
        return '';
    try {
        return JSON.parse(content);
    } catch {
        return content;
    }
}

/** The chat as node-llama-cpp's history: an assistant turn's calls carry the results of the tool messages that answer them. */
export function toChatHistory(messages: ChatMessage[]): ChatHistoryItem[] {
    const results = new Map(messages.filter((message) => message.role === 'tool').map((message) => [message.toolCallId, message.content]));
    const history: ChatHistoryItem[] = [];
    for (const message of messages) {
        if (message.role === 'tool')
            continue;
        if (message.role === 'assistant') {
            const calls = (message.toolCalls ?? []).map((call): ChatModelFunctionCall => ({
                type: 'functionCall', name: call.name, params: JSON.parse(call.arguments), result: toolResult(results.get(call.id))
            }));
            history.push({type: 'model', response: [...message.content === '' && calls.length > 0 ? [] : [message.content], ...calls]});
        } else
            history.push(message.role === 'system' ? {type: 'system', text: message.content} : {type: 'user', text: message.content});
    }
    history.push({type: 'model', response: []});
    return history;
}
