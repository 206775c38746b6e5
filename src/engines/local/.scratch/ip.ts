import sharp from 'sharp';
import { mkdtempSync } from 'node:fs';
import { inpaintImage } from '../image-inpaint.ts';
import { prewarmInpaint, shutdownInpaint } from '../inpaint-pool.ts';
const dir = mkdtempSync('/tmp/ip-');
for (const N of [512, 1024, 2048]) {
  const raw = Buffer.alloc(N*N*3);
  for (let y=0;y<N;y++) for (let x=0;x<N;x++){const i=(y*N+x)*3; raw[i]=x*255/N; raw[i+1]=y*255/N; raw[i+2]=128;}
  const b0=N*0.3|0, b1=N*0.6|0;
  for (let y=b0;y<b1;y++) for (let x=b0;x<b1;x++){const i=(y*N+x)*3; raw[i]=raw[i+1]=raw[i+2]=0;}
  await sharp(raw,{raw:{width:N,height:N,channels:3}}).png().toFile(`${dir}/o${N}.png`);
  const m = Buffer.alloc(N*N);
  for (let y=b0-2;y<b1+2;y++) for (let x=b0-2;x<b1+2;x++) m[y*N+x]=255;
  await sharp(m,{raw:{width:N,height:N,channels:1}}).png().toFile(`${dir}/m${N}.png`);
}
let t=performance.now();
console.log('prewarm', await prewarmInpaint(), (performance.now()-t).toFixed(0));
for (const N of [512, 1024, 2048]) {
  t=performance.now();
  const out = await inpaintImage({jobId:'j',capability:'image.inpaint',prompt:'x',params:{},inputs:[{role:'image',path:`${dir}/o${N}.png`,mimeType:'image/png'},{role:'mask',path:`${dir}/m${N}.png`,mimeType:'image/png'}]},{signal:new AbortController().signal,onProgress(){},workDir:dir});
  console.log(N, (performance.now()-t).toFixed(0),'ms', out[0].path);
  const { execSync } = await import('node:child_process'); execSync(`cp ${out[0].path} /tmp/ip_${N}.png`);
}
await shutdownInpaint();
