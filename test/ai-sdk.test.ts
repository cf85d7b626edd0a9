import {createOpenAICompatible} from '@ai-sdk/openai-compatible';
import test from 'ava';
import {generateObject, generateText, streamText, tool} from 'ai';
import {z} from 'zod';
import {byteTokenBan} from '../harness/byte-token-ban.js';
import {demoDaemonForFile} from '../harness/demo-daemon.js';

/** Vercel's AI SDK against the proxy, as an app would use it (@ai-sdk/openai-compatible). */

const demo = demoDaemonForFile();
const strongdoge = (model: string) =>
    createOpenAICompatible({name: 'strongdoge', baseURL: demo().daemon.baseUrl, supportsStructuredOutputs: true})(model);

test('generateObject with a zod schema gets an object the SDK accepts: bounds and lengths hold', async (t) => {
    const schema = z.object({
        count: z.number().int().min(0).max(9),
        label: z.string().max(12),
        mood: z.enum(['happy', 'sad']),
        tags: z.array(z.string().max(5)).max(2)
    });
    let parsed = 0;
    for (const seed of [1, 2, 3]) {
        try {
            const {object} = await generateObject({
                model: strongdoge('demo'), schema, prompt: 'Describe a dog', temperature: 1, seed, maxOutputTokens: 300,
                providerOptions: {strongdoge: {logit_bias: byteTokenBan()}}
            });
            t.true(object.count >= 0 && object.count <= 9 && Number.isInteger(object.count));
            t.true([...object.label].length <= 12);
            parsed++;
        } catch (error) {
            // A reply cut by the token budget is not an object; any other failure is.
            t.regex((error as Error).message, /could not parse|No object generated/i, (error as Error).message);
        }
    }
    t.true(parsed > 0, 'at least one object came back whole');
});

test('generateText and streamText get the text, the finish reason and usage', async (t) => {
    const whole = await generateText({model: strongdoge('demo'), prompt: 'Such wow', temperature: 0, maxOutputTokens: 12});
    t.is(whole.finishReason, 'length');
    t.is(whole.usage.outputTokens, 12);
    const streamed = streamText({model: strongdoge('demo'), prompt: 'Such wow', temperature: 0, maxOutputTokens: 12});
    let text = '';
    for await (const part of streamed.textStream)
        text += part;
    t.is(text, whole.text);
});

test('tools: generateText and streamText get the same call, its input parsed by the tool\'s zod schema', async (t) => {
    const getWeather = tool({
        description: 'The weather in a city',
        inputSchema: z.object({city: z.string().max(12), days: z.number().int().min(1).max(7)})
    });
    const options = {
        model: strongdoge('demo'), prompt: 'What is the weather in Paris?', tools: {get_weather: getWeather}, toolChoice: 'required' as const,
        temperature: 0, maxOutputTokens: 200, providerOptions: {strongdoge: {logit_bias: byteTokenBan(), parallel_tool_calls: false}}
    };
    const whole = await generateText(options);
    t.is(whole.finishReason, 'tool-calls');
    t.is(whole.toolCalls.length, 1);
    const [call] = whole.toolCalls;
    t.is(call!.toolName, 'get_weather');
    const input = call!.input as {city: string, days: number};
    t.true([...input.city].length <= 12 && Number.isInteger(input.days) && input.days >= 1 && input.days <= 7, JSON.stringify(input));

    const streamed = streamText(options);
    const calls = await streamed.toolCalls;
    t.deepEqual(calls.map(({toolName, input: streamedInput}) => ({toolName, input: streamedInput})), [{toolName: call!.toolName, input: call!.input}]);
    t.is(await streamed.finishReason, 'tool-calls');
});
