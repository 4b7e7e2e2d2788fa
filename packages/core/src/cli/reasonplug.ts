/** Entry point of the `reasonplug` executable. */
import { main } from './main.js';

await main();
