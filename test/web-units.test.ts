import test from 'ava';
import {parseInline, parseMarkdown, safeHref} from '../web/chat/markdown-parse.js';
import {addSample, THROUGHPUT_WINDOW_MS} from '../web/network/throughput-samples.js';

/**
 * The web page's pure parts: its Markdown (web/chat/markdown-parse.ts: what a model writes becomes these blocks and
 * spans, never markup) and its tokens/s samples (web/network/throughput.ts).
 */

test('fenced code keeps its text as written, an unclosed fence (still streaming) runs to the end', (t) => {
    t.deepEqual(parseMarkdown('Here:\n```js\nconst a = "<b>";\n\n```\nafter'), [
        {type: 'paragraph', lines: ['Here:']},
        {type: 'code', language: 'js', text: 'const a = "<b>";\n'},
        {type: 'paragraph', lines: ['after']}
    ]);
    t.deepEqual(parseMarkdown('~~~\nopen <script>'), [{type: 'code', language: '', text: 'open <script>'}]);
});

test('headings, rules, quotes, tables and nested lists', (t) => {
    t.deepEqual(parseMarkdown('## Title ##\n---\n> quoted\n> more'), [
        {type: 'heading', level: 2, text: 'Title'},
        {type: 'rule'},
        {type: 'quote', blocks: [{type: 'paragraph', lines: ['quoted', 'more']}]}
    ]);
    t.deepEqual(parseMarkdown('| a | b |\n|:--|--:|\n| 1 | 2 |'), [{type: 'table', header: ['a', 'b'], rows: [['1', '2']]}]);
    t.deepEqual(parseMarkdown('1. one\n   - inner\n2. two\n\ntext'), [
        {type: 'list', ordered: true, start: 1, items: [
            [{type: 'paragraph', lines: ['one']}, {type: 'list', ordered: false, start: 1, items: [[{type: 'paragraph', lines: ['inner']}]]}],
            [{type: 'paragraph', lines: ['two']}]
        ]},
        {type: 'paragraph', lines: ['text']}
    ]);
});

test('inline spans: code, strong, emphasis, strike, escapes; markup stays text', (t) => {
    t.deepEqual(parseInline('a `<b>` **bold _em_** ~~gone~~ \\*not\\* snake_case_name <img src=x>'), [
        {type: 'text', text: 'a '},
        {type: 'code', text: '<b>'},
        {type: 'text', text: ' '},
        {type: 'strong', children: [{type: 'text', text: 'bold '}, {type: 'em', children: [{type: 'text', text: 'em'}]}]},
        {type: 'text', text: ' '},
        {type: 'strike', children: [{type: 'text', text: 'gone'}]},
        {type: 'text', text: ' *not* snake_case_name <img src=x>'}
    ]);
});

test('links only to http(s) and mailto; any other scheme is text', (t) => {
    t.deepEqual(parseInline('[ok](https://example.org/a) [no](javascript:alert(1)) see http://x.test/p.'), [
        {type: 'link', href: 'https://example.org/a', children: [{type: 'text', text: 'ok'}]},
        {type: 'text', text: ' '},
        {type: 'link', href: null, children: [{type: 'text', text: 'no'}]},
        {type: 'text', text: ') see '},
        {type: 'link', href: 'http://x.test/p', children: [{type: 'text', text: 'http://x.test/p'}]},
        {type: 'text', text: '.'}
    ]);
    for (const url of ['javascript:alert(1)', 'JAVASCRIPT:x', 'data:text/html,<b>', 'vbscript:x', '//evil.test', '/relative'])
        t.is(safeHref(url), null, url);
    t.is(safeHref('mailto:a@b.test'), 'mailto:a@b.test');
});

test('runs of markers parse without catastrophic backtracking; a line past the limit is text', (t) => {
    const hostile = `${'**a '.repeat(1000)}${'_'.repeat(2000)}${'`'.repeat(2000)}${'*b'.repeat(1000)}`;
    t.is(parseMarkdown(`${hostile}\n`.repeat(4)).length, 1);
    t.true(parseInline(hostile).length > 1000);
    t.deepEqual(parseInline('*'.repeat(20_000)), [{type: 'text', text: '*'.repeat(20_000)}], 'a line past the limit is text');
});

test('tokens/s samples come from the growth of the node\'s token counter; a restarted node starts anew; old samples leave the window', (t) => {
    const node = {nodeId: 'a', uptimeSeconds: 100};
    const first = {...node, at: 10_000, tokens: 50};
    t.deepEqual(addSample([], undefined, first), [], 'one reading is no rate yet');
    const second = {...node, at: 12_000, tokens: 250, uptimeSeconds: 102};
    t.deepEqual(addSample([], first, second), [{at: 12_000, tokensPerSecond: 100}]);
    t.deepEqual(addSample([{at: 12_000, tokensPerSecond: 100}], second, {...second, at: 14_000, tokens: 10, uptimeSeconds: 1}), [{at: 12_000, tokensPerSecond: 100}],
        'a counter that went down (a restart) gives no sample');
    t.deepEqual(addSample([{at: 12_000, tokensPerSecond: 100}], second, {...second, at: 14_000, nodeId: 'b'}), [{at: 12_000, tokensPerSecond: 100}],
        'another node behind the same address gives no sample');
    const later = {...second, at: 12_000 + THROUGHPUT_WINDOW_MS + 2_000, tokens: 250};
    t.deepEqual(addSample([{at: 12_000, tokensPerSecond: 100}], {...later, at: later.at - 2_000}, later), [{at: later.at, tokensPerSecond: 0}]);
});
