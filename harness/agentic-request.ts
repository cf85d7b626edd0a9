import type Anthropic from '@anthropic-ai/sdk';

/**
 * A Messages request shaped like what agentic coding tools send through `ANTHROPIC_BASE_URL`: a long system prompt
 * in blocks with `cache_control`, a dozen tools whose schemas carry `$schema`, enums, arrays of objects and unbounded
 * strings, an earlier tool_use/tool_result exchange, `metadata.user_id`, and fields this API does not know
 * (`context_management`). Its size is set by `paragraphs` so that it fits the demo model's context.
 */

const draft7 = 'http://json-schema.org/draft-07/schema#';

function tool(name: string, description: string, properties: Record<string, unknown>, required: string[]): Anthropic.Tool {
    return {name, description, input_schema: {$schema: draft7, type: 'object', properties, required, additionalProperties: false} as Anthropic.Tool.InputSchema};
}

export const agenticTools: Anthropic.Tool[] = [
    tool('Bash', 'Runs a shell command in a persistent session, with an optional timeout.', {
        command: {type: 'string', description: 'The command to run'},
        timeout: {type: 'number', description: 'Milliseconds, at most 600000'},
        description: {type: 'string', description: 'What the command does, in a few words'},
        run_in_background: {type: 'boolean'}
    }, ['command']),
    tool('Read', 'Reads a file from the local filesystem.', {
        file_path: {type: 'string', description: 'The absolute path of the file'},
        offset: {type: 'number'},
        limit: {type: 'number'}
    }, ['file_path']),
    tool('Edit', 'Replaces a string in a file.', {
        file_path: {type: 'string'}, old_string: {type: 'string'}, new_string: {type: 'string'},
        replace_all: {type: 'boolean', default: false}
    }, ['file_path', 'old_string', 'new_string']),
    tool('Write', 'Writes a file.', {file_path: {type: 'string'}, content: {type: 'string'}}, ['file_path', 'content']),
    tool('Glob', 'Finds files by a glob pattern.', {pattern: {type: 'string'}, path: {type: 'string'}}, ['pattern']),
    tool('Grep', 'Searches file contents with a regular expression.', {
        pattern: {type: 'string'}, path: {type: 'string'}, glob: {type: 'string'},
        output_mode: {type: 'string', enum: ['content', 'files_with_matches', 'count']},
        '-i': {type: 'boolean'}, '-n': {type: 'boolean'}, head_limit: {type: 'number'}
    }, ['pattern']),
    tool('TodoWrite', 'Keeps a structured list of tasks for the session.', {
        todos: {type: 'array', items: {type: 'object', properties: {
            content: {type: 'string', minLength: 1},
            status: {type: 'string', enum: ['pending', 'in_progress', 'completed']},
            activeForm: {type: 'string', minLength: 1}
        }, required: ['content', 'status', 'activeForm'], additionalProperties: false}}
    }, ['todos']),
    tool('WebFetch', 'Fetches a page and answers a question about it.', {url: {type: 'string', format: 'uri'}, prompt: {type: 'string'}}, ['url', 'prompt']),
    tool('Task', 'Starts a sub-agent for a complex, multi-step task.', {
        description: {type: 'string'}, prompt: {type: 'string'}, subagent_type: {type: 'string'}
    }, ['description', 'prompt', 'subagent_type']),
    tool('NotebookEdit', 'Replaces the source of a cell in a Jupyter notebook.', {
        notebook_path: {type: 'string'}, cell_id: {type: 'string'}, new_source: {type: 'string'},
        cell_type: {type: 'string', enum: ['code', 'markdown']}, edit_mode: {type: 'string', enum: ['replace', 'insert', 'delete']}
    }, ['notebook_path', 'new_source']),
    tool('ExitPlanMode', 'Leaves plan mode with a plan for the user to approve.', {plan: {type: 'string'}}, ['plan']),
    {...tool('AskUser', 'Asks the user a question with a few choices.', {
        question: {type: 'string'}, options: {type: 'array', items: {type: 'string'}, minItems: 2, maxItems: 4}
    }, ['question', 'options']), cache_control: {type: 'ephemeral'}}
];

const rules = [
    'You are an interactive assistant that helps users with software engineering tasks.',
    'Use the tools available to you to read and change files, run commands and search the code.',
    'Be concise: answer in a few lines unless the user asks for detail.',
    'Never guess file contents; read them first.',
    'When you change code, follow the conventions of the file: its style, its libraries, its naming.',
    'Run the tests after a change and report what failed, with the command you ran.'
];

/** The system prompt's blocks: `paragraphs` numbered repetitions of the rules, the last block marked for caching. */
export function agenticSystem(paragraphs: number): Anthropic.TextBlockParam[] {
    const body = Array.from({length: paragraphs}, (_, index) => `Rule set ${index + 1}. ${rules.join(' ')}`).join('\n\n');
    return [
        {type: 'text', text: 'You are a coding agent running in a terminal.'},
        {type: 'text', text: body, cache_control: {type: 'ephemeral'}}
    ];
}

/** The request body (without `stream`): a turn after an earlier Glob call answered by its tool_result. */
export function agenticRequest(paragraphs: number, maxTokens: number) {
    return {
        model: 'demo',
        max_tokens: maxTokens,
        system: agenticSystem(paragraphs),
        tools: agenticTools,
        tool_choice: {type: 'auto' as const},
        metadata: {user_id: 'user_0123456789abcdef_account__session_0f0f0f0f'},
        context_management: {edits: []},
        messages: [
            {role: 'user' as const, content: [{type: 'text' as const, text: 'Which test files are there?'}]},
            {role: 'assistant' as const, content: [
                {type: 'text' as const, text: 'Let me look.'},
                {type: 'tool_use' as const, id: 'toolu_01AbCdEfGhIjKlMnOpQrStUv', name: 'Glob', input: {pattern: 'test/**/*.test.ts'}}
            ]},
            {role: 'user' as const, content: [
                {type: 'tool_result' as const, tool_use_id: 'toolu_01AbCdEfGhIjKlMnOpQrStUv', content: 'test/a.test.ts\ntest/b.test.ts'},
                {type: 'text' as const, text: 'Now fix the failing one.', cache_control: {type: 'ephemeral' as const}}
            ]}
        ]
    };
}
