// Polar's JavaScript ingestion, used exactly as its README shows (nothing patched): the LLM
// strategy wraps an AI SDK model, prices every call with a cost resolver and sends one event per
// call through @polar-sh/sdk. Only the server URLs differ: Meterline instead of Polar, a local
// OpenAI-compatible server instead of OpenAI.
//
// env: METERLINE_URL, METERLINE_TOKEN, OPENAI_BASE_URL. Prints, as one JSON line, what each
// call was charged for: [{customer, tokens, cost}] (cost as the JSON number the SDK sent).

import { createOpenAI } from "@ai-sdk/openai";
import { Ingestion } from "@polar-sh/ingestion";
import { LLMStrategy } from "@polar-sh/ingestion/strategies/LLM";
import { generateText, streamText } from "ai";

const openai = createOpenAI({ apiKey: "sk-test", baseURL: process.env.OPENAI_BASE_URL });

// cents: $0.50 per million input tokens, $1.50 per million output tokens
const price = (ctx) => ({
  amount: ctx.inputTokens * 0.00005 + ctx.outputTokens * 0.00015,
  currency: "usd",
});

const sent = [];
const llmIngestion = Ingestion({
  accessToken: process.env.METERLINE_TOKEN,
  serverURL: process.env.METERLINE_URL,
})
  .strategy(new LLMStrategy(openai.chat("gpt-test")))
  .cost((ctx) => {
    const cost = price(ctx);
    sent.push({ tokens: ctx.totalTokens, cost: cost.amount });
    return cost;
  })
  .ingest("openai-usage");

const calls = [
  ["js-alice", "Summarize the invoice"],
  ["js-alice", "Translate it to French, please"],
  ["js-bob", "Count the tokens of this sentence"],
];
for (const [customer, prompt] of calls) {
  const model = llmIngestion.client({ externalCustomerId: customer });
  const { text } = await generateText({ model, prompt });
  if (!text) throw new Error("no completion");
  sent[sent.length - 1].customer = customer;
}
// a streamed call: the strategy ingests when the stream finishes
const streamed = streamText({
  model: llmIngestion.client({ externalCustomerId: "js-bob" }),
  prompt: "Stream a short answer",
});
let streamedText = "";
for await (const part of streamed.textStream) streamedText += part;
if (!streamedText) throw new Error("no streamed completion");
await streamed.usage;
// the finish chunk's ingestion runs inside the stream's transform: wait for it to be recorded
for (let i = 0; i < 100 && sent.length < calls.length + 1; i++) {
  await new Promise((resolve) => setTimeout(resolve, 50));
}
sent[sent.length - 1].customer = "js-bob";

console.log(JSON.stringify(sent));
