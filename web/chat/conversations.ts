/**
 * Conversations live in this browser's localStorage and nowhere else: the node keeps no chat history
 * (README, "The web page").
 */

export interface ChatMessage {
    role: 'user' | 'assistant',
    content: string,
    /** Why an answer ended: the node's `stop` or `length`, `stopped` (the stop button) or `error`. */
    finish?: string,
    error?: string,
    tokensPerSecond?: number
}

export interface ChatSettings {
    model: string,
    system: string,
    temperature: number,
    maxTokens: number
}

export interface Conversation extends ChatSettings {
    id: string,
    title: string,
    messages: ChatMessage[],
    updatedAt: number
}

const STORAGE_KEY = 'strongdoge.conversations';
/** The most kept: the oldest go first, localStorage holds a few MB per origin. */
export const MAX_CONVERSATIONS = 50;

export const chatSettingsDefaults: ChatSettings = {model: '', system: '', temperature: 0.7, maxTokens: 512};

function isConversation(value: unknown): value is Conversation {
    const candidate = value as Conversation | null;
    return typeof candidate === 'object' && candidate !== null && typeof candidate.id === 'string' && typeof candidate.title === 'string'
        && Array.isArray(candidate.messages) && candidate.messages.every((message) => (message?.role === 'user' || message?.role === 'assistant') && typeof message.content === 'string')
        && typeof candidate.model === 'string' && typeof candidate.system === 'string' && typeof candidate.temperature === 'number'
        && typeof candidate.maxTokens === 'number' && typeof candidate.updatedAt === 'number';
}

/** The stored conversations, newest first; what does not read as one (another version, a hand edit) is left out. */
export function loadConversations(): Conversation[] {
    try {
        const stored = JSON.parse(localStorage.getItem(STORAGE_KEY) ?? '[]') as unknown;
        return Array.isArray(stored) ? stored.filter(isConversation).sort((a, b) => b.updatedAt - a.updatedAt) : [];
    } catch {
        return [];
    }
}

/** Stores them, the newest `MAX_CONVERSATIONS`; false when the browser refused (quota, storage off). */
export function saveConversations(conversations: Conversation[]) {
    try {
        localStorage.setItem(STORAGE_KEY, JSON.stringify(conversations.slice(0, MAX_CONVERSATIONS)));
        return true;
    } catch {
        return false;
    }
}

export function newConversation(settings: ChatSettings): Conversation {
    // getRandomValues, not randomUUID: a page on a LAN address over http is no secure context.
    const id = Array.from(crypto.getRandomValues(new Uint8Array(12)), (byte) => byte.toString(16).padStart(2, '0')).join('');
    return {...settings, id, title: 'New chat', messages: [], updatedAt: Date.now()};
}

/** A conversation's title: the start of its first question. */
export function titleOf(messages: ChatMessage[]) {
    const first = messages.find((message) => message.role === 'user')?.content.trim().replace(/\s+/g, ' ') ?? '';
    return first === '' ? 'New chat' : first.length > 48 ? `${first.slice(0, 47)}…` : first;
}
