// `npm run fakes`: the three fake providers on loopback, to try the remote engines offline.
// Paste the printed variables into the shell that runs `npm start`.
import { FAKE_VOLC_ACCESS_KEY_ID, FAKE_VOLC_SECRET_ACCESS_KEY, startFakeJimeng } from '../test/fakes/jimeng.ts';
import { startFakeEvolink } from '../test/fakes/evolink.ts';
import { startFakeSeedance } from '../test/fakes/seedance.ts';

// A few seconds per task, like the real services (only faster).
const timing = { queuedMs: 1000, runningMs: 4000, fetchInputs: true };
const [jimeng, seedance, evolink] = await Promise.all([startFakeJimeng(timing), startFakeSeedance(timing), startFakeEvolink(timing)]);

console.log(`Fake providers are running. Start Zhinian with:

export ZHINIAN_ALLOW_PRIVATE_URLS=true
export ZHINIAN_JIMENG_BASE_URL=${jimeng.baseUrl}
export ZHINIAN_VOLC_ACCESS_KEY_ID=${FAKE_VOLC_ACCESS_KEY_ID}
export ZHINIAN_VOLC_SECRET_ACCESS_KEY=${FAKE_VOLC_SECRET_ACCESS_KEY}
export ZHINIAN_ARK_BASE_URL=${seedance.baseUrl}
export ZHINIAN_ARK_API_KEY=test-ark-key
export ZHINIAN_EVOLINK_BASE_URL=${evolink.baseUrl}
export ZHINIAN_EVOLINK_API_KEY=sk-evo-test
npm start

Put [fake:<scenario>] in a prompt to inject a fault (rate_limit, server_error, moderation_result, never_finish, url_expired, …).
Ctrl-C stops the fakes.`);

process.on('SIGINT', async () => {
  await Promise.all([jimeng.close(), seedance.close(), evolink.close()]);
  process.exit(0);
});
