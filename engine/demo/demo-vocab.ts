import {TokenType} from '../gguf/gguf-types.js';

/** SentencePiece marks a word-initial space with U+2581. */
const SPM_SPACE = '\u2581';

export const DEMO_SPECIAL_TOKENS = {
    unknown: '<unk>',
    bos: '<s>',
    eos: '</s>',
    imStart: '<|im_start|>',
    imEnd: '<|im_end|>'
} as const;

/** Tags a tool-calling template writes around calls and results; text tokens, as in Qwen 2.5 and Hermes models. */
export const DEMO_TOOL_TOKENS = ['<tool_call>', '</tool_call>', '<tool_response>', '</tool_response>'] as const;

/**
 * ChatML with Qwen 2.5's tool calling (the format Hermes and Qwen models share; as Hermes 3 on Llama writes it,
 * after the BOS token): tools are listed in the system turn, calls are JSON objects between `<tool_call>` tags, results are user turns between `<tool_response>` tags.
 */
export const DEMO_CHAT_TEMPLATE = [
    // The model's BOS token first, as Llama-based Hermes templates write it (node-llama-cpp adds none of its own).
    '{{- bos_token }}',
    '{%- if tools %}',
    "{{- '<|im_start|>system\\n' }}",
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}",
    '{{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}',
    '{%- for tool in tools %}{{- "\\n" }}{{- tool | tojson }}{%- endfor %}',
    '{{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}',
    "{%- elif messages[0]['role'] == 'system' %}",
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}",
    '{%- endif %}',
    '{%- for message in messages %}',
    '{%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}',
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}",
    '{%- elif message.role == "assistant" %}',
    "{{- '<|im_start|>' + message.role }}",
    "{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}",
    '{%- for tool_call in message.tool_calls %}',
    '{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}',
    '{{- \'\\n<tool_call>\\n{"name": "\' }}{{- tool_call.name }}{{- \'", "arguments": \' }}{{- tool_call.arguments | tojson }}{{- \'}\\n</tool_call>\' }}',
    '{%- endfor %}',
    "{{- '<|im_end|>\\n' }}",
    '{%- elif message.role == "tool" %}',
    '{%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}{{- \'<|im_start|>user\' }}{%- endif %}',
    "{{- '\\n<tool_response>\\n' }}{{- message.content }}{{- '\\n</tool_response>' }}",
    '{%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}{{- \'<|im_end|>\\n\' }}{%- endif %}',
    '{%- endif %}',
    '{%- endfor %}',
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
].join('');

const COMMON_WORDS = (
    'the of and to in is that for it as was with be by on not he this are or his from at which but have an they you ' +
    'were her she there one all we their has been if more when will would who so no can out up what about into than ' +
    'them only other time new some could these two may first then do any like my now over such our man me even most ' +
    'made after also did many before must through back years where much your way well down should because each just ' +
    'those people how too little state good very make world still own see men work long get here between both life ' +
    'being under never day same another know while last might us great old year off come since against go came right ' +
    'used take three doge swarm model layer token peer node network compute much wow such very'
).split(' ');

const SUFFIXES = ['ing', 'ed', 'er', 'es', 'ly', 'tion', 'ment', 'ness', 'est', 'al', 'ous', 'ive'];

export interface DemoVocab {
    tokens: string[],
    scores: number[],
    tokenTypes: number[],
    bosId: number,
    eosId: number,
    unknownId: number,
    imEndId: number
}

/**
 * A llama SPM vocabulary: special tokens, the 256 byte-fallback tokens (so any text encodes),
 * printable ASCII characters, then word pieces scored by length so merges prefer longer pieces.
 */
export function buildDemoVocab(): DemoVocab {
    const tokens: string[] = [];
    const scores: number[] = [];
    const tokenTypes: number[] = [];
    const seen = new Set<string>();
    const add = (token: string, type: number, score: number) => {
        if (seen.has(token))
            return;
        seen.add(token);
        tokens.push(token);
        tokenTypes.push(type);
        scores.push(score);
    };

    add(DEMO_SPECIAL_TOKENS.unknown, TokenType.unknown, 0);
    add(DEMO_SPECIAL_TOKENS.bos, TokenType.control, 0);
    add(DEMO_SPECIAL_TOKENS.eos, TokenType.control, 0);
    add(DEMO_SPECIAL_TOKENS.imStart, TokenType.control, 0);
    add(DEMO_SPECIAL_TOKENS.imEnd, TokenType.control, 0);
    for (let byte = 0; byte < 256; byte++)
        add(`<0x${byte.toString(16).toUpperCase().padStart(2, '0')}>`, TokenType.byte, 0);

    add(SPM_SPACE, TokenType.normal, -1);
    for (let code = 0x21; code < 0x7f; code++)
        add(String.fromCharCode(code), TokenType.normal, -1);
    for (let code = 0x61; code <= 0x7a; code++)
        add(SPM_SPACE + String.fromCharCode(code), TokenType.normal, -0.9);

    const pieces = [
        ...COMMON_WORDS.map((word) => SPM_SPACE + word),
        ...SUFFIXES,
        ...COMMON_WORDS.filter((word) => word.length >= 3).map((word) => word.slice(0, 2))
    ];
    for (const piece of pieces)
        add(piece, TokenType.normal, -1 / piece.length);
    // Last, so that adding them left every other token's id as it was.
    for (const tag of DEMO_TOOL_TOKENS)
        add(tag, TokenType.userDefined, 0);

    return {
        tokens, scores, tokenTypes,
        unknownId: tokens.indexOf(DEMO_SPECIAL_TOKENS.unknown),
        bosId: tokens.indexOf(DEMO_SPECIAL_TOKENS.bos),
        eosId: tokens.indexOf(DEMO_SPECIAL_TOKENS.eos),
        imEndId: tokens.indexOf(DEMO_SPECIAL_TOKENS.imEnd)
    };
}
