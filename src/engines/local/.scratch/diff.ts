import sharp from 'sharp';
for (const N of [512,1024,2048]) {
  const { data } = await sharp(`/tmp/ip_${N}.png`).raw().toBuffer({resolveWithObject:true});
  const b0=N*0.3|0, b1=N*0.6|0; let sum=0,n=0,max=0;
  for (let y=b0;y<b1;y++) for (let x=b0;x<b1;x++){const i=(y*N+x)*3; const e=[x*255/N|0,y*255/N|0,128]; for(let c=0;c<3;c++){const d=Math.abs(data[i+c]-e[c]);sum+=d;n++;max=Math.max(max,d);} }
  console.log(N,'mean',(sum/n).toFixed(2),'max',max);
}
