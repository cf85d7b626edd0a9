import {createHash, createHmac, timingSafeEqual} from 'node:crypto';

/** The network every node joins unless told otherwise. */
export const PUBLIC_NETWORK = 'public';

export interface NetworkSpec {
    name: string,
    /** Private networks: only peers that know it are kept. */
    secret?: string
}

/**
 * The DHT topic of a network. A private network's topic also depends on its secret, so outsiders do not even
 * find its nodes; the handshake proof (below) keeps out anyone who finds them anyway.
 */
export function networkTopic({name, secret}: NetworkSpec): Buffer {
    const hash = createHash('sha256').update('strongdoge/network/v1\0').update(name);
    if (secret !== undefined)
        hash.update('\0private\0').update(createHash('sha256').update(secret).digest());
    return hash.digest();
}

/**
 * Proof that a peer knows the network secret, bound to this one Noise session (its handshake hash) and to
 * the prover's key, so it can be neither replayed on another connection nor reflected back.
 */
export function secretProof(secret: string, handshakeHash: Buffer, proverPublicKey: Buffer): Buffer {
    return createHmac('sha256', secret).update('strongdoge/network-proof/v1\0').update(handshakeHash).update(proverPublicKey).digest();
}

export function verifySecretProof(secret: string, handshakeHash: Buffer, proverPublicKey: Buffer, proof: Buffer) {
    const expected = secretProof(secret, handshakeHash, proverPublicKey);
    return proof.length === expected.length && timingSafeEqual(proof, expected);
}

/**
 * The DHT topic a model's providers announce on (docs/architecture.md, "Finding providers and hosts"): derived from
 * the network's topic, so a private network's stays unfindable, and from the model file's SHA-256 (hex).
 */
export function providerTopic(network: NetworkSpec, modelSha256: string): Buffer {
    return createHash('sha256').update('strongdoge/provider/v1\0').update(networkTopic(network)).update(Buffer.from(modelSha256, 'hex')).digest();
}

/** The DHT topic nodes with room for peers' layers announce on: coordinators look it up for hosts beyond their peers. */
export function hostsTopic(network: NetworkSpec): Buffer {
    return createHash('sha256').update('strongdoge/hosts/v1\0').update(networkTopic(network)).digest();
}
