#!/usr/bin/env node
import '../dist/cli/reasonplug.js';

