/**
 * Markdown as plain data: blocks, and inline spans of text. `markdown.tsx` turns them into a fixed set of elements,
 * every string a text node, so nothing a model writes becomes markup. Covers what chat models write: fenced code,
 * inline code, emphasis, strike, headings, lists (nested), quotes, tables, rules, links and bare URLs. An unclosed
 * fence (an answer still streaming) runs to the end.
 */

export type MarkdownBlock =
    | {type: 'code', language: string, text: string}
    | {type: 'heading', level: number, text: string}
    | {type: 'quote', blocks: MarkdownBlock[]}
    | {type: 'list', ordered: boolean, start: number, items: MarkdownBlock[][]}
    | {type: 'rule'}
    | {type: 'table', header: string[], rows: string[][]}
    | {type: 'paragraph', lines: string[]};

export type InlineSpan =
    | {type: 'text', text: string}
    | {type: 'code', text: string}
    | {type: 'strong' | 'em' | 'strike', children: InlineSpan[]}
    /** `href` is null for a URL that is not http(s) or mailto: its text is shown, as text. */
    | {type: 'link', href: string | null, children: InlineSpan[]};

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$/;
const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_DIVIDER = /^\s*\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)*\|?\s*$/;
/** Quotes and lists inside quotes and lists: deeper than this they are paragraphs. */
const MAX_DEPTH = 8;

function tableCells(line: string) {
    return line.trim().replace(/^\|/, '').replace(/\|$/, '').split('|').map((cell) => cell.trim());
}

function startsTable(line: string, next: string | undefined) {
    return line.includes('|') && next?.includes('-') === true && TABLE_DIVIDER.test(next);
}

function startsBlock(line: string, next: string | undefined) {
    return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line) || startsTable(line, next);
}

function closesFence(line: string, marker: string) {
    const trimmed = line.trim();
    return trimmed.startsWith(marker) && /^[`~]+$/.test(trimmed);
}

/** The lines of one list, from `index`: each item's text, its deeper lines with their indent taken off. */
function listItems(lines: string[], index: number, indent: number, ordered: boolean) {
    const items: string[][] = [];
    while (index < lines.length) {
        const line = lines[index]!;
        const item = ITEM.exec(line);
        if (item && item[1]!.length <= indent) {
            if (/\d/.test(item[2]!) !== ordered)
                break;
            items.push([item[3]!]);
        } else if (line.trim() === '') {
            const following = lines[index + 1];
            // A blank line ends the list unless the list goes on after it.
            if (following === undefined || !(/^\s/.test(following) || ITEM.test(following)))
                break;
            items.at(-1)!.push('');
        } else if (/^\s/.test(line) || !startsBlock(line, lines[index + 1])) {
            items.at(-1)!.push(line.replace(/^\s{1,4}/, ''));
        } else {
            break;
        }
        index++;
    }
    return {items, next: index};
}

export function parseMarkdown(source: string, depth = 0): MarkdownBlock[] {
    const lines = source.replace(/\r\n?/g, '\n').split('\n');
    const blocks: MarkdownBlock[] = [];
    let index = 0;
    while (index < lines.length) {
        const line = lines[index]!;
        const fence = FENCE.exec(line);
        const heading = HEADING.exec(line);
        const item = ITEM.exec(line);
        if (line.trim() === '') {
            index++;
        } else if (fence) {
            const body: string[] = [];
            for (index++; index < lines.length && !closesFence(lines[index]!, fence[1]!); index++)
                body.push(lines[index]!);
            index++;
            blocks.push({type: 'code', language: fence[2]!, text: body.join('\n')});
        } else if (heading) {
            blocks.push({type: 'heading', level: heading[1]!.length, text: heading[2]!});
            index++;
        } else if (RULE.test(line)) {
            blocks.push({type: 'rule'});
            index++;
        } else if (depth < MAX_DEPTH && QUOTE.test(line)) {
            const quoted: string[] = [];
            while (index < lines.length && QUOTE.test(lines[index]!))
                quoted.push(QUOTE.exec(lines[index++]!)![1]!);
            blocks.push({type: 'quote', blocks: parseMarkdown(quoted.join('\n'), depth + 1)});
        } else if (depth < MAX_DEPTH && item) {
            const ordered = /\d/.test(item[2]!);
            const {items, next} = listItems(lines, index, item[1]!.length, ordered);
            index = next;
            blocks.push({type: 'list', ordered, start: ordered ? Number.parseInt(item[2]!, 10) : 1,
                items: items.map((itemLines) => parseMarkdown(itemLines.join('\n'), depth + 1))});
        } else if (startsTable(line, lines[index + 1])) {
            const header = tableCells(line);
            const rows: string[][] = [];
            for (index += 2; index < lines.length && lines[index]!.includes('|') && lines[index]!.trim() !== ''; index++)
                rows.push(tableCells(lines[index]!));
            blocks.push({type: 'table', header, rows});
        } else {
            const paragraph: string[] = [];
            while (index < lines.length && lines[index]!.trim() !== '' && (paragraph.length === 0 || !startsBlock(lines[index]!, lines[index + 1])))
                paragraph.push(lines[index++]!.trim());
            blocks.push({type: 'paragraph', lines: paragraph});
        }
    }
    return blocks;
}

/**
 * Code spans (without backticks inside), strong, strike, emphasis, links, bare URLs, backslash escapes; one line at
 * a time. Every alternative fails fast on a run of markers, so a hostile line costs at most quadratic time in its
 * length, and lines longer than `MAX_INLINE_LENGTH` are text.
 */
const INLINE = /(`+)([^`]+)\1(?!`)|\*\*(.+?)\*\*|__(.+?)__|~~(.+?)~~|\*(?![\s*])(.+?)(?<![\s*])\*|(?<![\p{L}\p{N}_])_(?![\s_])(.+?)(?<![\s_])_(?![\p{L}\p{N}_])|\[([^\]]+)\]\(([^)\s]+)\)|(https?:\/\/[^\s<>]*[^\s<>.,;:!?'")\]])|\\([!-/:-@[-`{-~])/gu;

/** Only these become links: a model's `javascript:` or `data:` URL stays text. */
export function safeHref(url: string) {
    return /^(https?:\/\/|mailto:)/i.test(url) ? url : null;
}

const MAX_INLINE_LENGTH = 10_000;

export function parseInline(text: string): InlineSpan[] {
    if (text.length > MAX_INLINE_LENGTH)
        return [{type: 'text', text}];
    const spans: InlineSpan[] = [];
    const pushText = (piece: string) => {
        const last = spans.at(-1);
        if (last?.type === 'text')
            last.text += piece;
        else if (piece !== '')
            spans.push({type: 'text', text: piece});
    };
    let last = 0;
    for (const match of text.matchAll(INLINE)) {
        pushText(text.slice(last, match.index));
        last = match.index + match[0].length;
        const [, , code, strong, strongUnderscore, strike, emphasis, emphasisUnderscore, linkText, linkHref, url, escaped] = match;
        if (code !== undefined)
            spans.push({type: 'code', text: /^ .+ $/.test(code) ? code.slice(1, -1) : code});
        else if (strong !== undefined || strongUnderscore !== undefined)
            spans.push({type: 'strong', children: parseInline((strong ?? strongUnderscore)!)});
        else if (strike !== undefined)
            spans.push({type: 'strike', children: parseInline(strike)});
        else if (emphasis !== undefined || emphasisUnderscore !== undefined)
            spans.push({type: 'em', children: parseInline((emphasis ?? emphasisUnderscore)!)});
        else if (linkText !== undefined)
            spans.push({type: 'link', href: safeHref(linkHref!), children: parseInline(linkText)});
        else if (url !== undefined)
            spans.push({type: 'link', href: safeHref(url), children: [{type: 'text', text: url}]});
        else
            pushText(escaped!);
    }
    pushText(text.slice(last));
    return spans;
}
