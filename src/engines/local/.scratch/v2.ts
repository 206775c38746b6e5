import { mkdtempSync } from 'node:fs';
import { createLocalEngine } from '../index.ts';
const e = createLocalEngine();
await e.run({jobId:'w',capability:'image.generate',prompt:'warm',params:{width:64,height:64},inputs:[]},{signal:new AbortController().signal,onProgress(){},workDir:mkdtempSync('/tmp/v-')});
for (const [ratio,res,dur,imgs] of [['16:9','720p',5,[]],['16:9','720p',5,['/tmp/zp.png']],['16:9','1080p',5,['/tmp/zp.png']],['16:9','1080p',10,[]]] as const) {
  const dir = mkdtempSync('/tmp/v-');
  const t = performance.now(); let t10=0;
  await e.run({jobId:'j',capability:'video.generate',prompt:'A calm lake at dawn',params:{settings:{ratio,resolution:res,duration:dur}},inputs:imgs.map(p=>({role:'image',path:p,mimeType:'image/png'}))},{signal:new AbortController().signal,onProgress(p){ if(p===10&&!t10) t10=performance.now();},workDir:dir});
  const end=performance.now();
  console.log(ratio,res,dur+'s',imgs.length?'image':'prompt','total',(end-t).toFixed(0),'ms; scenes',(t10-t).toFixed(0),'encode',(end-t10).toFixed(0));
}
