import {withDefaults} from '../../core/with-defaults.js';
import type {ModelOffer} from '../capabilities.js';
import {checkGossipFrame, MAX_GOSSIP_AGE_MS, MAX_GOSSIP_ENTRIES, MAX_GOSSIP_PROVIDERS, type GossipEntry, type GossipFrame, type GossipProvider} from './gossip-messages.js';

/**
 * The network model table as gossip spreads it (issue 26): every model some node serves, keyed by its file's
 * SHA-256, with how many providers were seen and a few of them, each with an age. Pure: no I/O, the clock injected.
 *
 * - Each round a node pushes `frame()` to a few peers, and `merge`s what peers push to it. A frame holds at most
 *   `entriesPerFrame` models; a larger table goes out in turns (see `frame()`).
 * - Frames carry ages, never timestamps: a receiver dates a provider `now − age − hopAgeMs` by its own clock. The
 *   hop's cost makes a record older at each hop, never younger, so no node dates a provider later than the provider
 *   last spoke, and a departed provider is gone from every table `ttlMs` after its last frame (plus the round that
 *   notices) as long as a hop takes under `hopAgeMs` and relays are honest.
 * - This node's own offers are authoritative: listed with age 0 in every frame, never evicted, never dated by peers.
 * - Counting: a model's providers are a set of at most `maxTrackedProviders` distinct ids seen within the TTL (the
 *   count is a lower bound once it is full, and counts a departed provider until its TTL). A peer that names itself
 *   counts once; the others it names are second-hand, and one peer holds at most `providersPerEntry` of those in an
 *   entry at a time (a new one replaces its stalest), so however it lies a peer raises an entry's count at this
 *   node by at most `providersPerEntry + 1`. Second-hand ids are hints until a connection proves them: a lying
 *   peer can keep that many ids alive, and its neighbours relay them.
 * - Bounded: at most `maxEntries` models. On overflow the models with the fewest providers go first, the stalest
 *   among equals; this node's own never go.
 */

export interface ModelGossipOptions {
    /** This node's id (hex public key). */
    selfId: string,
    /** Models kept; defaults to 1,024. */
    maxEntries: number,
    /** Models per frame; defaults to 32, the frame's bound. */
    entriesPerFrame: number,
    /** Providers named per model, in a frame and in `entries()`; defaults to 4, the frame's bound. */
    providersPerEntry: number,
    /** Distinct providers counted per model; defaults to 16. */
    maxTrackedProviders: number,
    /** A provider not heard of for this long is dropped, and a model with none left; defaults to 3 min. */
    ttlMs: number,
    /** Added to every age received: what a hop may take, at most; defaults to 1 s. */
    hopAgeMs: number,
    /** Milliseconds; defaults to `Date.now`. */
    clock: () => number
}

export const modelGossipDefaults = {
    maxEntries: 1_024,
    entriesPerFrame: MAX_GOSSIP_ENTRIES,
    providersPerEntry: MAX_GOSSIP_PROVIDERS,
    maxTrackedProviders: 16,
    ttlMs: 3 * 60_000,
    hopAgeMs: 1_000,
    clock: Date.now
};

/** One of this node's models, as its capabilities offer it; an offer not hashed yet cannot be gossiped. */
export interface LocalModel {
    sha256: string,
    name: string,
    sizeBytes: number,
    layers: number,
    quantization: string
}

export interface GossipProviderView {
    id: string,
    /** How long ago this node last had word of it; 0 for this node itself. */
    ageMs: number,
    self: boolean,
    /** It named itself in a frame to this node (it was connected); otherwise it is second-hand. */
    direct: boolean
}

export interface GossipModelView {
    sha256: string,
    name: string,
    sizeBytes: number,
    layers: number,
    quantization: string,
    /** This node serves it. */
    local: boolean,
    /** Distinct providers seen within the TTL, this node included. */
    providerCount: number,
    /** The count reached its bound: there may be more. */
    providerCountCapped: boolean,
    /** Up to `providersPerEntry`, this node first, then the freshest. */
    providers: GossipProviderView[],
    /** The freshest provider's age. */
    ageMs: number
}

interface ProviderRecord {
    id: string,
    /** When this node last had word of it, by this node's clock. */
    seenAt: number,
    /** The peer whose frame last freshened it: the provider itself, or a relaying peer. */
    via: string
}

/** Where an entry's description came from: a relaying peer, a provider itself, or this node's own offer. */
type Source = 'relayed' | 'provider' | 'local';

interface Entry {
    sha256: string,
    name: string,
    sizeBytes: number,
    layers: number,
    quantization: string,
    source: Source,
    local: boolean,
    /** Other nodes than this one, at most `maxTrackedProviders`, freshest first. */
    providers: ProviderRecord[],
    /** The frame it last went out in; a new entry counts as gone out in the last one, so news cannot starve the rest. */
    sentIn: number,
    /** New to this node, or with a provider new to it, since it last went out. */
    news: boolean
}

const HEX_ID = /^[0-9a-f]{64}$/;

export function localModelsFromOffers(offers: readonly ModelOffer[]): LocalModel[] {
    return offers.flatMap((offer) => offer.sha256 === null ? [] :
        [{sha256: offer.sha256, name: offer.id, sizeBytes: offer.sizeBytes, layers: offer.layers, quantization: offer.quantization}]);
}

export class ModelGossip {
    private readonly options: ModelGossipOptions;
    private readonly table = new Map<string, Entry>();
    private frames = 0;

    constructor(options: Partial<ModelGossipOptions> & {selfId: string}) {
        this.options = withDefaults(modelGossipDefaults, options);
        const {selfId, entriesPerFrame, providersPerEntry, maxTrackedProviders, ttlMs, hopAgeMs, maxEntries} = this.options;
        if (!HEX_ID.test(selfId))
            throw new Error('ModelGossip: selfId must be 64 lowercase hex digits');
        if (!(entriesPerFrame >= 1 && entriesPerFrame <= MAX_GOSSIP_ENTRIES) || !(providersPerEntry >= 1 && providersPerEntry <= MAX_GOSSIP_PROVIDERS))
            throw new Error(`ModelGossip: 1–${MAX_GOSSIP_ENTRIES} models and 1–${MAX_GOSSIP_PROVIDERS} providers per frame`);
        if (!(maxTrackedProviders >= providersPerEntry) || !(maxEntries >= 1))
            throw new Error('ModelGossip: maxTrackedProviders under providersPerEntry, or no room for a model');
        if (!(ttlMs > hopAgeMs && hopAgeMs >= 0 && ttlMs <= MAX_GOSSIP_AGE_MS))
            throw new Error(`ModelGossip: the TTL must exceed hopAgeMs and be at most ${MAX_GOSSIP_AGE_MS} ms`);
    }

    /** Models held, this node's included; expired ones count until the next `frame()`, `expire()` or read. */
    get size() {
        return this.table.size;
    }

    /** This node's models, all of them each time: the ones no longer offered stay only while others provide them. */
    setLocalModels(models: readonly LocalModel[]) {
        const offered = new Set<string>();
        for (const model of models) {
            if (!HEX_ID.test(model.sha256))
                throw new Error(`ModelGossip: local model ${model.name} has no SHA-256`);
            offered.add(model.sha256);
            const entry = this.table.get(model.sha256);
            if (entry === undefined)
                this.table.set(model.sha256, {...describe(model), source: 'local', local: true, providers: [], sentIn: this.frames, news: true});
            else {
                if (!entry.local)
                    entry.news = true;
                Object.assign(entry, describe(model), {source: 'local', local: true});
                // this node is authoritative about itself: a peer's record of it is dropped
                entry.providers = entry.providers.filter((record) => record.id !== this.options.selfId);
            }
        }
        for (const entry of this.table.values())
            if (entry.local && !offered.has(entry.sha256)) {
                entry.local = false;
                entry.source = 'relayed';
                if (entry.providers.length === 0)
                    this.table.delete(entry.sha256);
            }
    }

    /**
     * Checks a peer's frame, then merges it; a frame the schema refuses throws a `ProtocolViolation` and changes
     * nothing. `from` is the node id of the peer that sent it, as its connection proves. Returns how many models were
     * new to this node.
     */
    merge(frame: unknown, from: string) {
        if (!HEX_ID.test(from))
            throw new Error('ModelGossip: a frame from a peer without a node id');
        return this.mergeChecked(checkGossipFrame(frame), from);
    }

    /**
     * `merge` for a frame already checked: by the channel's schema, `checkGossipFrame`, or built by `frame()`; `from`
     * must be a node id.
     */
    mergeChecked(frame: GossipFrame, from: string) {
        const now = this.options.clock();
        let added = 0;
        for (const offered of frame.entries)
            if (this.mergeEntry(offered, from, now))
                added++;
        if (this.table.size > this.options.maxEntries)
            this.trim();
        return added;
    }

    /**
     * The next frame to push. A table larger than a frame goes out in turns: up to a quarter of the frame for this
     * node's models, a quarter for news (models new to this node, or with a provider new to it), the rest for the
     * models that went out least recently, so every model goes out at least once in `size / (entriesPerFrame / 2)`
     * frames however much news comes in.
     */
    frame(): GossipFrame {
        const now = this.options.clock();
        this.expire();
        const {entriesPerFrame, selfId} = this.options;
        let chosen: Iterable<Entry> = this.table.values();
        if (this.table.size > entriesPerFrame) {
            const all = [...this.table.values()].sort((a, b) => a.sentIn - b.sentIn || freshest(b) - freshest(a));
            const quarter = Math.ceil(entriesPerFrame / 4);
            const picked = new Set([...all.filter((entry) => entry.local).slice(0, quarter), ...all.filter((entry) => entry.news && !entry.local).slice(0, quarter)]);
            for (const entry of all) {
                if (picked.size === entriesPerFrame)
                    break;
                picked.add(entry);
            }
            chosen = picked;
        }
        this.frames++;
        const entries: GossipEntry[] = [];
        for (const entry of chosen) {
            entry.sentIn = this.frames;
            entry.news = false;
            const providers: GossipProvider[] = entry.local ? [{id: selfId, ageMs: 0}] : [];
            for (const record of this.named(entry))
                providers.push({id: record.id, ageMs: age(record, now)});
            entries.push({sha256: entry.sha256, name: entry.name, sizeBytes: entry.sizeBytes, layers: entry.layers, quantization: entry.quantization, providers});
        }
        return {entries};
    }

    /** Drops the providers not heard of within the TTL, and the models left with none; returns how many models went. */
    expire() {
        const now = this.options.clock();
        let removed = 0;
        for (const entry of this.table.values())
            if (this.expireEntry(entry, now))
                removed++;
        return removed;
    }

    /** Whether this node knows a live provider of the model. */
    has(sha256: string) {
        const entry = this.table.get(sha256);
        return entry !== undefined && (entry.local || (entry.providers.length > 0 && this.alive(entry.providers[0]!, this.options.clock())));
    }

    get(sha256: string): GossipModelView | undefined {
        const now = this.options.clock();
        const entry = this.table.get(sha256);
        return entry === undefined || this.expireEntry(entry, now) ? undefined : this.view(entry, now);
    }

    /** The table, by name then hash. */
    entries(): GossipModelView[] {
        this.expire();
        const now = this.options.clock();
        return [...this.table.values()].map((entry) => this.view(entry, now))
            .sort((a, b) => a.name.localeCompare(b.name) || a.sha256.localeCompare(b.sha256));
    }

    private view(entry: Entry, now: number): GossipModelView {
        const {sha256, name, sizeBytes, layers, quantization, local} = entry;
        const providers: GossipProviderView[] = local ? [{id: this.options.selfId, ageMs: 0, self: true, direct: true}] : [];
        for (const record of this.named(entry))
            providers.push({id: record.id, ageMs: age(record, now), self: false, direct: record.via === record.id});
        return {sha256, name, sizeBytes, layers, quantization, local,
            providerCount: entry.providers.length + Number(local),
            providerCountCapped: entry.providers.length >= this.options.maxTrackedProviders,
            providers, ageMs: providers[0]!.ageMs};
    }

    /** The freshest others, as many as a frame names beside this node. */
    private named(entry: Entry) {
        const room = this.options.providersPerEntry - Number(entry.local);
        return entry.providers.length <= room ? entry.providers : entry.providers.slice(0, room);
    }

    /** Drops an entry's expired providers, and the entry if none is left; returns whether it went. */
    private expireEntry(entry: Entry, now: number) {
        const {providers} = entry;
        while (providers.length > 0 && !this.alive(providers[providers.length - 1]!, now))
            providers.pop();
        if (entry.local || providers.length > 0)
            return false;
        this.table.delete(entry.sha256);
        return true;
    }

    private alive(record: ProviderRecord, now: number) {
        return now - record.seenAt < this.options.ttlMs;
    }

    /** Returns whether the model was new. */
    private mergeEntry(offered: GossipEntry, from: string, now: number) {
        const {selfId, hopAgeMs, ttlMs} = this.options;
        let entry = this.table.get(offered.sha256);
        let fromProvides = false;
        let anyAlive = false;
        for (const provider of offered.providers) {
            fromProvides ||= provider.id === from;
            anyAlive ||= provider.id !== selfId && provider.ageMs + hopAgeMs < ttlMs;
        }
        let isNew = false;
        if (entry === undefined) {
            // nothing to keep of a model whose providers are all expired, or are this node (it no longer serves it)
            if (!anyAlive)
                return false;
            entry = {...describe(offered), source: fromProvides ? 'provider' : 'relayed', local: false, providers: [], sentIn: this.frames, news: true};
            this.table.set(offered.sha256, entry);
            isNew = true;
        } else if (fromProvides && entry.source === 'relayed') {
            // a provider's own word on its file beats a relay's
            Object.assign(entry, describe(offered), {source: 'provider'});
        }
        for (const provider of offered.providers) {
            const seenAt = now - provider.ageMs - hopAgeMs;
            if (provider.id !== selfId && now - seenAt < ttlMs)
                this.record(entry, provider.id, seenAt, from);
        }
        return isNew;
    }

    /**
     * Adds or freshens a provider of an entry, within the entry's bound and the relaying peer's share of it. Records
     * stay freshest first, so the stalest is last.
     */
    private record(entry: Entry, id: string, seenAt: number, from: string) {
        const {providers} = entry;
        let index = -1;
        for (let position = 0; position < providers.length; position++)
            if (providers[position]!.id === id) {
                index = position;
                break;
            }
        if (index >= 0 && seenAt <= providers[index]!.seenAt)
            return;
        if (id !== from) {
            // a relay holds at most providersPerEntry second-hand records of an entry: its stalest makes room
            let held = 0;
            let stalest = -1;
            for (let position = providers.length - 1; position >= 0; position--) {
                const record = providers[position]!;
                if (record.via === from && record.id !== from && position !== index) {
                    held++;
                    if (stalest < 0)
                        stalest = position;
                }
            }
            if (held >= this.options.providersPerEntry) {
                if (seenAt <= providers[stalest]!.seenAt)
                    return;
                providers.splice(stalest, 1);
                if (stalest < index)
                    index--;
            }
        }
        if (index < 0 && providers.length >= this.options.maxTrackedProviders) {
            if (seenAt <= providers[providers.length - 1]!.seenAt)
                return;
            providers.pop();
        }
        const record = index >= 0 ? providers[index]! : {id, seenAt, via: from};
        if (index < 0) {
            entry.news = true;
            providers.push(record);
            index = providers.length - 1;
        }
        record.seenAt = seenAt;
        record.via = from;
        // move it up past the staler ones: the list stays freshest first
        while (index > 0 && providers[index - 1]!.seenAt < seenAt) {
            providers[index] = providers[index - 1]!;
            index--;
        }
        providers[index] = record;
    }

    /** Over the bound: the models with the fewest providers go, the stalest among equals; this node's own stay. */
    private trim() {
        this.expire();
        const excess = this.table.size - this.options.maxEntries;
        if (excess <= 0)
            return;
        const candidates = [...this.table.values()].filter((entry) => !entry.local)
            .sort((a, b) => a.providers.length - b.providers.length || freshest(a) - freshest(b) || (a.sha256 < b.sha256 ? -1 : 1));
        for (const entry of candidates.slice(0, excess))
            this.table.delete(entry.sha256);
    }
}

function describe({sha256, name, sizeBytes, layers, quantization}: LocalModel) {
    return {sha256, name, sizeBytes, layers, quantization};
}

/** When the entry's freshest provider was last heard of; this node's own models are always fresh. */
function freshest(entry: Entry) {
    return entry.local ? Number.MAX_VALUE : entry.providers[0]?.seenAt ?? -Number.MAX_VALUE;
}

/** Rounded up: a receiver never takes a provider for fresher than this node knows it to be. */
function age(record: ProviderRecord, now: number) {
    return Math.max(0, Math.ceil(now - record.seenAt));
}
