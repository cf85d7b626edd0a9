import {Fragment} from 'preact';
import {useState} from 'preact/hooks';
import {parseInline, parseMarkdown, type InlineSpan, type MarkdownBlock} from './markdown-parse.js';

/**
 * A model's answer as Markdown (markdown-parse.ts), rendered as a fixed set of elements whose every string is a text
 * node: nothing the model writes becomes markup, and the page never sets innerHTML.
 */

function Inline({spans}: {spans: InlineSpan[]}) {
    // biome-ignore lint/suspicious/noArrayIndexKey: a parsed document's parts have no identity but their place in it
    return <>{spans.map((span, index) => <Span key={index} span={span}/>)}</>;
}

function Span({span}: {span: InlineSpan}) {
    switch (span.type) {
        case 'text':
            return <>{span.text}</>;
        case 'code':
            return <code>{span.text}</code>;
        case 'strong':
            return <strong><Inline spans={span.children}/></strong>;
        case 'em':
            return <em><Inline spans={span.children}/></em>;
        case 'strike':
            return <s><Inline spans={span.children}/></s>;
        case 'link':
            return span.href === null
                ? <span><Inline spans={span.children}/></span>
                : <a href={span.href} target="_blank" rel="noopener noreferrer nofollow"><Inline spans={span.children}/></a>;
    }
}

function Text({text}: {text: string}) {
    return <Inline spans={parseInline(text)}/>;
}

function CodeBlock({language, text}: {language: string, text: string}) {
    const [copied, setCopied] = useState(false);
    // The clipboard API exists only in a secure context (localhost, https): elsewhere no button.
    const clipboard = typeof navigator.clipboard?.writeText === 'function';
    return (
        <div class="code-block">
            <div class="code-head">
                <span>{language || 'code'}</span>
                {clipboard && <button type="button" class="link-button" onClick={() => {
                    void navigator.clipboard.writeText(text).then(() => setCopied(true), () => undefined);
                }}>{copied ? 'Copied' : 'Copy'}</button>}
            </div>
            <pre><code>{text}</code></pre>
        </div>
    );
}

function Block({block}: {block: MarkdownBlock}) {
    switch (block.type) {
        case 'code':
            return <CodeBlock language={block.language} text={block.text}/>;
        case 'heading': {
            // An answer's # is a section of the answer, not of the page.
            const Heading = (['h3', 'h4', 'h5', 'h6'] as const)[Math.min(3, block.level - 1)]!;
            return <Heading><Text text={block.text}/></Heading>;
        }
        case 'quote':
            return <blockquote><Blocks blocks={block.blocks}/></blockquote>;
        case 'list': {
            // biome-ignore lint/suspicious/noArrayIndexKey: a parsed document's parts have no identity but their place in it
            const items = block.items.map((item, index) => <li key={index}><Blocks blocks={item}/></li>);
            return block.ordered ? <ol start={block.start}>{items}</ol> : <ul>{items}</ul>;
        }
        case 'rule':
            return <hr/>;
        case 'table': {
            const row = (cells: string[], Cell: 'th' | 'td') =>
                // biome-ignore lint/suspicious/noArrayIndexKey: a parsed document's parts have no identity but their place in it
                cells.map((cell, index) => <Cell key={index}><Text text={cell}/></Cell>);
            // biome-ignore lint/suspicious/noArrayIndexKey: a parsed document's parts have no identity but their place in it
            const rows = block.rows.map((cells, index) => <tr key={index}>{row(cells, 'td')}</tr>);
            return <div class="table-scroll"><table><thead><tr>{row(block.header, 'th')}</tr></thead><tbody>{rows}</tbody></table></div>;
        }
        case 'paragraph': {
            // biome-ignore lint/suspicious/noArrayIndexKey: a parsed document's parts have no identity but their place in it
            const lines = block.lines.map((line, index) => <Fragment key={index}>{index > 0 && <br/>}<Text text={line}/></Fragment>);
            return <p>{lines}</p>;
        }
    }
}

function Blocks({blocks}: {blocks: MarkdownBlock[]}) {
    // biome-ignore lint/suspicious/noArrayIndexKey: a parsed document's parts have no identity but their place in it
    return <>{blocks.map((block, index) => <Block key={index} block={block}/>)}</>;
}

export function Markdown({source}: {source: string}) {
    return <div class="markdown"><Blocks blocks={parseMarkdown(source)}/></div>;
}
