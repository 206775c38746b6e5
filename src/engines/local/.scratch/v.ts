import { mkdtempSync } from 'node:fs';
import { createLocalEngine } from '../index.ts';
import { ffmpegInfo, probeFile } from '../../../media/probe.ts';
const e = createLocalEngine();
for (const [ratio,res,dur,imgs] of [['16:9','720p',5,[]],['9:16','480p',5,['/tmp/zp.png']],['adaptive','1080p',5,['/tmp/zp.png','/tmp/r_1024.png']]] as const) {
  const dir = mkdtempSync('/tmp/v-');
  const t = performance.now(); const prog:number[]=[];
  const out = await e.run({jobId:'j',capability:'video.generate',prompt:'A calm lake at dawn',params:{settings:{ratio,resolution:res,duration:dur}},inputs:imgs.map(p=>({role:'image',path:p,mimeType:'image/png'}))},{signal:new AbortController().signal,onProgress(p){prog.push(p)},workDir:dir});
  console.log(ratio,res,(performance.now()-t).toFixed(0),'ms', await probeFile(out[0].path), (await ffmpegInfo(out[0].path)).video, prog.join(','));
}
