// Renders BPMN files to SVG from their diagram interchange (BPMNDI): the shapes and edges as the
// file lays them out, drawn in the style of Camunda Modeler (tasks with the template icon, events,
// gateways, sequence flows, labels). No browser needed: bpmn-moddle reads the file, this script
// writes the SVG. Output is deterministic, so a test can compare it with the committed picture.
//
// usage: node scripts/render-bpmn.mjs                      every examples/*.bpmn -> docs/examples/*.svg
//        node scripts/render-bpmn.mjs IN.bpmn OUT.svg      one file
import { readFile, readdir, writeFile, mkdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { BpmnModdle } from 'bpmn-moddle';

const require = createRequire(import.meta.url);
const zeebe = require('zeebe-bpmn-moddle/resources/zeebe.json');
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

const STROKE = '#22242a';
const FONT = 'Arial, Helvetica, sans-serif';
const MARGIN = 20;

function escapeXml(text) {
  return String(text)
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;');
}

function num(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}

// Approximate width of text in Arial: good enough to wrap labels the way the Modeler does.
function textWidth(text, size) {
  let width = 0;
  for (const ch of text) {
    width += /[il.,:;'|!]/.test(ch) ? 0.28 : /[mwMW]/.test(ch) ? 0.83 : /[A-Z]/.test(ch) ? 0.66 : 0.53;
  }
  return width * size;
}

function wrap(text, maxWidth, size) {
  const lines = [];
  for (const paragraph of String(text).split('\n')) {
    let line = '';
    for (const word of paragraph.split(/\s+/).filter(Boolean)) {
      const candidate = line ? `${line} ${word}` : word;
      if (line && textWidth(candidate, size) > maxWidth) {
        lines.push(line);
        line = word;
      } else {
        line = candidate;
      }
    }
    lines.push(line);
  }
  return lines;
}

function textBlock(lines, cx, top, size, lineHeight = size * 1.2) {
  return lines
    .map(
      (line, i) =>
        `<text x="${num(cx)}" y="${num(top + size + i * lineHeight)}" font-family="${FONT}" ` +
        `font-size="${size}" text-anchor="middle" fill="${STROKE}">${escapeXml(line)}</text>`,
    )
    .join('\n');
}

// The template icon (a data URI holding an SVG) drawn as nested SVG content at x, y, size.
function iconFromDataUri(uri, x, y, size) {
  const prefix = 'data:image/svg+xml,';
  if (!uri || !uri.startsWith(prefix)) {
    return '';
  }
  const svg = decodeURIComponent(uri.slice(prefix.length));
  const viewBox = /viewBox=['"]([^'"]+)['"]/.exec(svg);
  const inner = svg.replace(/^<svg[^>]*>/, '').replace(/<\/svg>\s*$/, '');
  return `<svg x="${num(x)}" y="${num(y)}" width="${size}" height="${size}" viewBox="${
    viewBox ? viewBox[1] : '0 0 32 32'
  }">${inner}</svg>`;
}

function gearIcon(x, y) {
  // A plain cog, for service tasks without a template icon.
  return (
    `<circle cx="${x + 9}" cy="${y + 9}" r="6" fill="none" stroke="${STROKE}" stroke-width="1.5" ` +
    `stroke-dasharray="3 1.7"/><circle cx="${x + 9}" cy="${y + 9}" r="2.5" fill="none" ` +
    `stroke="${STROKE}" stroke-width="1.2"/>`
  );
}

function errorMarker(cx, cy, r) {
  const s = r / 18;
  const points = [
    [-7, 8],
    [-3, -8],
    [1, 1],
    [6, -7],
    [3, 8],
    [-1, -1],
  ]
    .map(([px, py]) => `${num(cx + px * s)},${num(cy + py * s)}`)
    .join(' ');
  return `<polygon points="${points}" fill="none" stroke="${STROKE}" stroke-width="1.5" stroke-linejoin="round"/>`;
}

function timerMarker(cx, cy, r) {
  // A clock face with hands.
  const face = r * 0.6;
  return (
    `<circle cx="${num(cx)}" cy="${num(cy)}" r="${num(face)}" fill="none" stroke="${STROKE}" stroke-width="1.5"/>` +
    `<path d="M${num(cx)},${num(cy - face * 0.75)} L${num(cx)},${num(cy)} L${num(cx + face * 0.55)},${num(cy)}" ` +
    `fill="none" stroke="${STROKE}" stroke-width="1.5" stroke-linecap="round"/>`
  );
}

function messageMarker(cx, cy, r) {
  // An envelope.
  const w = r * 1.0;
  const h = r * 0.68;
  const x = cx - w / 2;
  const y = cy - h / 2;
  return (
    `<rect x="${num(x)}" y="${num(y)}" width="${num(w)}" height="${num(h)}" fill="none" stroke="${STROKE}" stroke-width="1.5"/>` +
    `<path d="M${num(x)},${num(y)} L${num(cx)},${num(cy + h * 0.1)} L${num(x + w)},${num(y)}" fill="none" ` +
    `stroke="${STROKE}" stroke-width="1.5"/>`
  );
}

function multiInstanceMarker(element, cx, bottom) {
  // Three bars above the bottom edge: upright for parallel, lying for sequential.
  const loop = element.loopCharacteristics;
  if (!loop || loop.$type !== 'bpmn:MultiInstanceLoopCharacteristics') {
    return '';
  }
  const bars = [-5, 0, 5].map((d) =>
    loop.isSequential
      ? `M${num(cx - 6)},${num(bottom - 12 + d)} L${num(cx + 6)},${num(bottom - 12 + d)}`
      : `M${num(cx + d)},${num(bottom - 18)} L${num(cx + d)},${num(bottom - 6)}`,
  );
  return `<path d="${bars.join(' ')}" stroke="${STROKE}" stroke-width="2"/>`;
}

function shapeSvg(shape) {
  const element = shape.bpmnElement;
  const { x, y, width, height } = shape.bounds;
  const type = element.$type;
  const parts = [];
  const cx = x + width / 2;
  const cy = y + height / 2;
  if (/Task$/.test(type) || type === 'bpmn:SubProcess' || type === 'bpmn:CallActivity') {
    parts.push(
      `<rect x="${num(x)}" y="${num(y)}" width="${num(width)}" height="${num(height)}" rx="10" ry="10" ` +
        `fill="#ffffff" stroke="${STROKE}" stroke-width="${type === 'bpmn:CallActivity' ? 4 : 2}"/>`,
    );
    if (element.loopCharacteristics) {
      parts.push(multiInstanceMarker(element, cx, y + height));
    }
    const icon = element.get('zeebe:modelerTemplateIcon');
    if (icon) {
      parts.push(iconFromDataUri(icon, x + 6, y + 6, 18));
    } else if (type === 'bpmn:ServiceTask') {
      parts.push(gearIcon(x + 4, y + 4));
    }
    if (element.name) {
      const lines = wrap(element.name, width - 12, 12);
      const top = cy - (lines.length * 14.4) / 2 - 1;
      parts.push(textBlock(lines, cx, top, 12, 14.4));
    }
    return parts.join('\n');
  }
  if (/Event$/.test(type)) {
    const r = width / 2;
    const end = type === 'bpmn:EndEvent';
    const intermediate = /Intermediate|Boundary/.test(type);
    parts.push(
      `<circle cx="${num(cx)}" cy="${num(cy)}" r="${num(r)}" fill="#ffffff" stroke="${STROKE}" ` +
        `stroke-width="${end ? 4 : intermediate ? 1.5 : 2}"/>`,
    );
    if (intermediate) {
      parts.push(
        `<circle cx="${num(cx)}" cy="${num(cy)}" r="${num(r - 3)}" fill="none" stroke="${STROKE}" stroke-width="1.5"/>`,
      );
    }
    const definitions = element.eventDefinitions || [];
    if (definitions.some((d) => d.$type === 'bpmn:ErrorEventDefinition')) {
      parts.push(errorMarker(cx, cy, r));
    }
    if (definitions.some((d) => d.$type === 'bpmn:TimerEventDefinition')) {
      parts.push(timerMarker(cx, cy, r));
    }
    if (definitions.some((d) => d.$type === 'bpmn:MessageEventDefinition')) {
      parts.push(messageMarker(cx, cy, r));
    }
    return parts.join('\n');
  }
  if (/Gateway$/.test(type)) {
    parts.push(
      `<polygon points="${num(cx)},${num(y)} ${num(x + width)},${num(cy)} ${num(cx)},${num(y + height)} ${num(x)},${num(cy)}" ` +
        `fill="#ffffff" stroke="${STROKE}" stroke-width="2"/>`,
    );
    if (type === 'bpmn:EventBasedGateway') {
      // A double circle around a pentagon.
      const r = width * 0.26;
      const pentagon = [0, 1, 2, 3, 4]
        .map((i) => {
          const a = -Math.PI / 2 + (i * 2 * Math.PI) / 5;
          return `${num(cx + Math.cos(a) * r * 0.62)},${num(cy + Math.sin(a) * r * 0.62)}`;
        })
        .join(' ');
      parts.push(
        `<circle cx="${num(cx)}" cy="${num(cy)}" r="${num(r)}" fill="none" stroke="${STROKE}" stroke-width="1.2"/>` +
          `<circle cx="${num(cx)}" cy="${num(cy)}" r="${num(r - 2.5)}" fill="none" stroke="${STROKE}" stroke-width="1.2"/>` +
          `<polygon points="${pentagon}" fill="none" stroke="${STROKE}" stroke-width="1.5"/>`,
      );
    }
    if (type === 'bpmn:ExclusiveGateway' && shape.isMarkerVisible) {
      const d = width * 0.2;
      parts.push(
        `<path d="M${num(cx - d)},${num(cy - d)} L${num(cx + d)},${num(cy + d)} M${num(cx + d)},${num(cy - d)} ` +
          `L${num(cx - d)},${num(cy + d)}" stroke="${STROKE}" stroke-width="3.5" stroke-linecap="round"/>`,
      );
    }
    return parts.join('\n');
  }
  return `<rect x="${num(x)}" y="${num(y)}" width="${num(width)}" height="${num(height)}" fill="none" stroke="${STROKE}" stroke-dasharray="4 3"/>`;
}

function edgeSvg(edge) {
  const points = edge.waypoint.map((p) => `${num(p.x)},${num(p.y)}`).join(' ');
  const parts = [
    `<polyline points="${points}" fill="none" stroke="${STROKE}" stroke-width="2" ` +
      `stroke-linejoin="round" marker-end="url(#arrow)"/>`,
  ];
  const flow = edge.bpmnElement;
  const source = flow.sourceRef;
  if (source && source.default === flow) {
    // The default-flow slash, just after the source.
    const [a, b] = edge.waypoint;
    const length = Math.hypot(b.x - a.x, b.y - a.y) || 1;
    const ux = (b.x - a.x) / length;
    const uy = (b.y - a.y) / length;
    const mx = a.x + ux * 10;
    const my = a.y + uy * 10;
    parts.push(
      `<line x1="${num(mx - uy * 5 - ux * 3)}" y1="${num(my + ux * 5 - uy * 3)}" ` +
        `x2="${num(mx + uy * 5 + ux * 3)}" y2="${num(my - ux * 5 + uy * 3)}" stroke="${STROKE}" stroke-width="2"/>`,
    );
  }
  return parts.join('\n');
}

function externalLabel(di) {
  const element = di.bpmnElement;
  const bounds = di.label && di.label.bounds;
  if (!element.name || !bounds || /Task$/.test(element.$type)) {
    return '';
  }
  const lines = wrap(element.name, Math.max(bounds.width, 90), 11);
  return textBlock(lines, bounds.x + bounds.width / 2, bounds.y - 1, 11, 13.2);
}

function extent(items) {
  let minX = Infinity;
  let minY = Infinity;
  let maxX = -Infinity;
  let maxY = -Infinity;
  const add = (x, y) => {
    minX = Math.min(minX, x);
    minY = Math.min(minY, y);
    maxX = Math.max(maxX, x);
    maxY = Math.max(maxY, y);
  };
  for (const di of items) {
    if (di.bounds) {
      add(di.bounds.x, di.bounds.y);
      add(di.bounds.x + di.bounds.width, di.bounds.y + di.bounds.height);
    }
    for (const p of di.waypoint || []) {
      add(p.x, p.y);
    }
    const label = di.label && di.label.bounds;
    if (label && di.bpmnElement.name) {
      // Labels may be wrapped wider than their bounds.
      const width = Math.max(label.width, 90);
      add(label.x + label.width / 2 - width / 2, label.y);
      add(label.x + label.width / 2 + width / 2, label.y + label.height + 14);
    }
  }
  return { minX, minY, maxX, maxY };
}

export async function renderBpmn(xml) {
  const moddle = new BpmnModdle({ zeebe });
  const { rootElement, warnings } = await moddle.fromXML(xml);
  if (warnings.length) {
    throw new Error(`the BPMN file has problems: ${warnings.map((w) => w.message).join('; ')}`);
  }
  const plane = rootElement.diagrams[0].plane;
  const items = plane.planeElement || [];
  const shapes = items.filter((di) => di.$type === 'bpmndi:BPMNShape');
  const edges = items.filter((di) => di.$type === 'bpmndi:BPMNEdge');
  // Boundary events are drawn over their task.
  const order = (di) => (di.bpmnElement.$type === 'bpmn:BoundaryEvent' ? 1 : 0);
  shapes.sort((a, b) => order(a) - order(b));
  const { minX, minY, maxX, maxY } = extent(items);
  const x0 = Math.floor(minX - MARGIN);
  const y0 = Math.floor(minY - MARGIN);
  const width = Math.ceil(maxX + MARGIN) - x0;
  const height = Math.ceil(maxY + MARGIN) - y0;
  const title = rootElement.rootElements.find((e) => e.$type === 'bpmn:Process');
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="${x0} ${y0} ${width} ${height}">`,
    `<title>${escapeXml((title && (title.name || title.id)) || 'BPMN diagram')}</title>`,
    '<defs><marker id="arrow" viewBox="0 0 20 20" refX="11" refY="10" markerWidth="10" markerHeight="10" ' +
      `orient="auto"><path d="M 1 5 L 11 10 L 1 15 Z" fill="${STROKE}" stroke="${STROKE}" stroke-width="1"/></marker></defs>`,
    `<rect x="${x0}" y="${y0}" width="${width}" height="${height}" fill="#ffffff"/>`,
    ...edges.map(edgeSvg),
    ...shapes.map(shapeSvg),
    ...shapes.map(externalLabel).filter(Boolean),
    ...edges.map(externalLabel).filter(Boolean),
    '</svg>',
    '',
  ].join('\n');
}

async function renderFile(input, output) {
  const svg = await renderBpmn(await readFile(input, 'utf-8'));
  await mkdir(dirname(output), { recursive: true });
  await writeFile(output, svg);
  console.log(`${input} -> ${output}`);
}

async function main(args) {
  if (args.length === 2) {
    return renderFile(args[0], args[1]);
  }
  if (args.length !== 0) {
    throw new Error('usage: node scripts/render-bpmn.mjs [IN.bpmn OUT.svg]');
  }
  const examples = join(ROOT, 'examples');
  for (const name of (await readdir(examples)).filter((n) => n.endsWith('.bpmn')).sort()) {
    await renderFile(join(examples, name), join(ROOT, 'docs', 'examples', basename(name, '.bpmn') + '.svg'));
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((error) => {
    console.error(error.message);
    process.exit(1);
  });
}
